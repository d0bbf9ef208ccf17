-- The sandbox runner, from the host's side: these boot real VMs.
local sandbox = require "devmapper.sandbox"

describe("sandbox", function()
  it("quotes any argument for sh", function()
    for _, s in ipairs {"plain", "with space", "it's", "$HOME", "a\nb", ""} do
      local p = io.popen("printf %s " .. sandbox.quote(s))
      assert.equal(s, p:read("a"))
      p:close()
    end
  end)

  it("finds a kernel with device-mapper and everything it needs", function()
    assert.is_true(sandbox.available())
    local ver, vmlinuz = sandbox.kernel()
    assert.truthy(io.open(vmlinuz, "rb"))
    local initrd = sandbox.initramfs(ver)
    assert.truthy(io.open(initrd, "rb"))
    -- named after its init, so a changed init is never booted from a stale
    -- build; a new build removes the older ones
    local dir, name = initrd:match("^(.*)/(initramfs%-.*)$")
    assert.matches("^initramfs%-" .. ver:gsub("%p", "%%%0") .. "%-%x+%.gz$", name)
    io.open(("%s/initramfs-%s-00000000.gz"):format(dir, ver), "w"):close()
    os.remove(initrd)
    assert.equal(initrd, sandbox.initramfs(ver))
    local p = io.popen("ls " .. sandbox.quote(dir))
    assert.equal(name .. "\n", p:read("a"))
    p:close()
  end)

  it("runs a command in the VM, in our directory and environment, and returns its status", function()
    local out = os.tmpname()
    local cwd = io.popen("pwd"):read("l")
    local ok, _, code = os.execute(("DMLUA_SPEC_VALUE='x y' build/dmlua -e %s > %s 2>&1"):format(sandbox.quote(
      'os.exit(require("devmapper.sandbox").run{"/bin/sh", "-c", '
      .. '"pwd; echo \\"$DMLUA_SPEC_VALUE\\"; grep -c device-mapper /proc/misc; echo to-stderr >&2; exit 7"})'), out))
    local f = io.open(out)
    local text = f:read("a")
    f:close()
    os.remove(out)
    assert.falsy(ok)
    assert.equal(7, code)
    assert.equal(cwd .. "\nx y\n1\nto-stderr\n", text)
  end)

  it("runs dmlua --sandbox scripts with their arguments and exit status", function()
    local p = io.popen("build/dmlua --sandbox -e 'print(require(\"devmapper\").version()) os.exit(3)' 2>&1; echo \"rc=$?\"")
    local text = p:read("a")
    p:close()
    assert.matches("^%d+%.%d+%.%d+\nrc=3\n$", text)
  end)
end)
