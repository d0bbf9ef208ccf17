-- The sandbox runner, from the host's side: these boot real VMs.
local sandbox = require "devmapper.sandbox"
local support = require "spec.support"
after_each(support.cleanup)

-- Start `dmlua --sandbox` on a script in the background; returns its pid, a
-- way to read its output, and the lines up to the guest's "ready".
local function start(script, env)
  local dir = support.tmpdir()
  local f = assert(io.open(dir .. "/script.lua", "w"))
  f:write(script)
  f:close()
  local p = io.popen(("%s sh -c 'echo $$; exec build/dmlua --sandbox %s/script.lua' 2>&1; echo \"rc=$?\"")
                     :format(env or "", dir))
  local pid = p:read("l")
  local seen = {}
  repeat
    local line = p:read("l")
    seen[#seen + 1] = line
  until not line or line == "ready" or line:match("^rc=")
  return {p = p, pid = pid, seen = table.concat(seen, "\n")}
end

local function alive(pid) return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true end

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
    -- in a cache of its own: a run of dmlua --sandbox elsewhere keeps the shared one
    local cache = support.tmpdir()
    local function build()
      local p = io.popen(("XDG_CACHE_HOME=%s build/dmlua -e 'print(require(\"devmapper.sandbox\").initramfs(%q))'")
                         :format(sandbox.quote(cache), ver))
      local path = p:read("l")
      p:close()
      return path
    end
    local initrd = build()
    assert.truthy(io.open(initrd, "rb"))
    -- named after its init, so a changed init is never booted from a stale
    -- build; a new build removes the older ones
    local dir, name = initrd:match("^(.*)/(initramfs%-.*)$")
    assert.equal(cache .. "/lua-devmapper", dir)
    assert.matches("^initramfs%-" .. ver:gsub("%p", "%%%0") .. "%-%x+%.cpio$", name)
    io.open(("%s/initramfs-%s-00000000.cpio"):format(dir, ver), "w"):close()
    os.remove(initrd)
    assert.equal(initrd, build())
    local p = io.popen("ls -A " .. sandbox.quote(dir))
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

  for sig, n in pairs {INT = 2, TERM = 15} do
    it("passes SIG" .. sig .. " on to the command in the VM, which undoes its scope and exits " .. 128 + n, function()
      local h = start([[
local dm = require "devmapper"
local loop
local ok, err = pcall(function()
  local s <close> = dm.scope()
  local l = dm.loop.create("/tmp/sbsig-store", "1MiB")
  loop = l.path
  dm.create("sbsig", dm.linear(l))
  print("ready") io.stdout:flush()
  while true do end
end)
print(("left: %d devices, loop %s; %s"):format(#dm.list(), tostring(require("devmapper.core").loop_info(loop)),
                                             tostring(err)))
error(err, 0)
]])
      assert.equal("ready", h.seen:match("[^\n]*$"), h.seen)
      assert(os.execute(("kill -%s %s"):format(sig, h.pid)))
      local rest = h.p:read("a")
      h.p:close()
      assert.matches("left: 0 devices, loop nil; signal: interrupted by SIG" .. sig .. "\n", rest, 1, true)
      assert.matches("\nrc=" .. 128 + n .. "\n$", rest)
    end)
  end

  it("never leaves its VM behind: SIGKILL takes QEMU with it; a second signal ends the VM at once", function()
    local script = 'print("ready") io.stdout:flush() while true do end\n'
    local h = start(script)
    local qemu = io.popen("pgrep -P " .. h.pid):read("l")
    assert.truthy(qemu, "no QEMU under dmlua " .. h.pid)
    assert(os.execute("kill -KILL " .. h.pid))
    h.p:read("a")
    h.p:close()
    for _ = 1, 50 do if not alive(qemu) then break end require("devmapper.core").sleep(0.1) end
    assert.is_false(alive(qemu), "QEMU " .. qemu .. " outlived dmlua")
    -- the guest's command ignores the first signal: the second ends the VM
    h = start('print("ready") io.stdout:flush() while true do pcall(function() while true do end end) end\n')
    qemu = io.popen("pgrep -P " .. h.pid):read("l")
    assert(os.execute("kill -HUP " .. h.pid))
    require("devmapper.core").sleep(0.5)
    assert(os.execute("kill -HUP " .. h.pid))
    local rest = h.p:read("a")
    h.p:close()
    assert.matches("rc=125\n$", rest)
    assert.is_false(alive(qemu))
  end)

  it("ends a VM that runs past its timeout", function()
    local p = io.popen("DMLUA_SANDBOX_TIMEOUT=1 build/dmlua --sandbox -e 'print(1)' 2>&1; echo \"rc=$?\"")
    local text = p:read("a")
    p:close()
    assert.matches("the VM timed out after 1 s", text, 1, true)
    assert.matches("rc=125\n$", text)
  end)

  it("says so when the guest goes down under the command (a reboot: a verity restart_on_corruption, a panic)", function()
    local p = io.popen("build/dmlua --sandbox -e 'os.execute(\"echo b > /proc/sysrq-trigger\")' 2>&1; echo \"rc=$?\"")
    local text = p:read("a")
    p:close()
    assert.matches("the command did not finish (the guest went down under it: a kernel panic or reboot)", text, 1, true)
    assert.matches("rc=125\n$", text)
  end)
end)
