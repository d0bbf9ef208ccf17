-- The rock: `luarocks lint` passes, and `luarocks make` into a fresh tree
-- installs dmlua, the C module and every Lua module, which a plain lua5.4
-- then loads from that tree.
local support = require "spec.support"
after_each(support.cleanup)

describe("rockspec", function()
  it("lints, builds into a temporary tree, and loads there with plain lua5.4", function()
    local out, code = support.sh("luarocks lint lua-devmapper-scm-1.rockspec")
    assert.equal(0, code, out)
    local tree = support.tmpdir()
    local before = support.sh("git status --porcelain")
    out, code = support.sh(("luarocks --lua-version=5.4 make --tree=%s lua-devmapper-scm-1.rockspec"):format(tree))
    assert.equal(0, code, out)
    local p = io.popen("ls lua/devmapper/*.lua lua/devmapper/targets/*.lua")
    for path in p:lines() do
      assert.is_true(support.opens(tree .. "/share/lua/5.4/" .. path:sub(5)), path)
    end
    p:close()
    local paths = ("LUA_PATH='%s/share/lua/5.4/?.lua;%s/share/lua/5.4/?/init.lua' LUA_CPATH='%s/lib/lua/5.4/?.so'")
                  :format(tree, tree, tree)
    out, code = support.sh(paths .. " lua5.4 -e 'local dm = require \"devmapper\" print(dm._VERSION, dm.table.parse(\"0 8 zero\"))'")
    assert.equal(0, code, out)
    assert.equal("lua-devmapper scm\t0 8 zero\n", out)
    out, code = support.sh(tree .. "/bin/dmlua -e 'print(require(\"devmapper\").thin ~= nil)'")
    assert.equal(0, code, out)
    assert.equal("true\n", out)
    -- the build left nothing in the checkout that git would see
    assert.equal(before, support.sh("git status --porcelain"))
  end)
end)
