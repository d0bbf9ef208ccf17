-- The rockspec installs every module the build embeds in dmlua.
describe("rockspec", function()
  it("lists every Lua module and every C source", function()
    local spec = {}
    assert(loadfile("lua-devmapper-scm-1.rockspec", "t", spec))()
    local modules = spec.build.modules
    local p = io.popen("ls lua/devmapper/*.lua lua/devmapper/targets/*.lua csrc/*.c")
    for path in p:lines() do
      local name = path:match("^lua/devmapper/(.+)%.lua$")
      if name then
        local module = name == "init" and "devmapper" or "devmapper." .. name:gsub("/", ".")
        assert.equal(path, modules[module], module)
      elseif not path:match("dmlua%.c$") then
        assert.is_truthy(table.concat(modules["devmapper.core"].sources, " "):find(path, 1, true), path)
      end
    end
    p:close()
  end)
end)
