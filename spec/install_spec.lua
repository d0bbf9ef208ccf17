-- make install lays out what users and embedders need, and the README's
-- embedding example builds with pkg-config against the installed tree alone.
local support = require "spec.support"
after_each(support.cleanup)

describe("make install", function()
  it("installs dmlua, the module, the library, the header, pkg-config, man pages and the HTML reference; the example builds from them", function()
    local dest = support.tmpdir()
    local out, code = support.sh(("make -s install DESTDIR=%s PREFIX=/usr"):format(dest))
    assert.equal(0, code, out)
    for _, f in ipairs {"bin/dmlua", "lib/lua/5.4/devmapper/core.so", "share/lua/5.4/devmapper/init.lua",
                        "share/lua/5.4/devmapper/targets/thin_pool.lua", "lib/liblua-devmapper.so.0",
                        "lib/liblua-devmapper.so", "lib/liblua-devmapper.a", "include/lua-devmapper/devmapper.h",
                        "lib/pkgconfig/lua-devmapper.pc", "share/man/man1/dmlua.1", "share/man/man3/devmapper.3",
                        "share/doc/lua-devmapper/index.html", "share/doc/lua-devmapper/modules/devmapper.html"} do
      assert.is_true(support.opens(dest .. "/usr/" .. f), f)
    end
    -- the example, built with only what was installed (and the system's Lua and libraries)
    local env = ("PKG_CONFIG_PATH=%s/usr/lib/pkgconfig"):format(dest)
    out, code = support.sh(("%s cc examples/embed.c $(%s pkg-config --cflags --libs lua-devmapper) -o %s/embed")
                           :format(env, env, dest))
    assert.equal(0, code, out)
    out, code = support.sh(("LD_LIBRARY_PATH=%s/usr/lib %s/embed"):format(dest, dest))
    assert.equal(0, code, out)
    assert.equal("0 8192 striped 2 16 7:0 0 7:1 0\nlua-devmapper scm\n", out)
    -- the module's errors come through as objects with their text
    out, code = support.sh(("LD_LIBRARY_PATH=%s/usr/lib %s/embed 'require(\"devmapper\").table.parse(\"0 8 linear\")'")
                           :format(dest, dest))
    assert.equal(1, code)
    assert.matches("embed: table.parse: line 1 (linear): field 'dev' is missing", out, 1, true)
    -- statically linked, too
    out, code = support.sh(("%s cc examples/embed.c $(%s pkg-config --cflags lua-devmapper) "
                            .. "%s/usr/lib/liblua-devmapper.a $(%s pkg-config --libs --static lua-devmapper "
                            .. "| sed 's/-llua-devmapper//') -o %s/embed-static"):format(env, env, dest, env, dest))
    assert.equal(0, code, out)
    out = support.sh(dest .. "/embed-static")
    assert.equal("0 8192 striped 2 16 7:0 0 7:1 0\nlua-devmapper scm\n", out)
    -- a plain lua5.4 finds the installed module
    out, code = support.sh(("LUA_PATH='%s/usr/share/lua/5.4/?.lua;%s/usr/share/lua/5.4/?/init.lua' LUA_CPATH='%s/usr/lib/lua/5.4/?.so' "
                            .. "lua5.4 -e 'print(require(\"devmapper\").table.parse(\"0 8 zero\"))'"):format(dest, dest, dest))
    assert.equal(0, code, out)
    assert.equal("0 8 zero\n", out)
  end)
end)
