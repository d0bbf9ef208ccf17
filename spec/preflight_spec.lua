-- Preflight: before its first kernel operation the module checks that
-- /dev/mapper/control (and /dev/loop-control for loops) can be used, and
-- otherwise raises one error saying what is missing.
local core = require "devmapper.core"
local support = require "spec.support"
after_each(support.cleanup)

local function has_dm()
  local f = io.open("/proc/misc")
  local s = f and f:read("a") or ""
  if f then f:close() end
  return s:find(" device%-mapper\n") ~= nil
end

local function loops_of(file) return (support.sh("losetup --associated " .. file)) end

describe("preflight", function()
  it("refuses an unknown kind", function()
    local ok, err = pcall(core.preflight, "disk")
    assert.is_false(ok)
    assert.equal("preflight", err.op)
    assert.equal(22, err.errno)
  end)

  it("is not run in a dry run", function()
    local dm = require "devmapper"
    local text = support.dry(function() dm.loop.create("/nonexistent/dry-store", "1MiB") end)
    assert.matches("losetup", text, 1, true)
  end)
end)

describe("preflight without device-mapper", function()
  it("raises one clear error, before a script attaches any loop", function()
    if has_dm() then return pending("this kernel has device-mapper") end
    local dir = support.tmpdir()
    local script = dir .. "/first.lua"
    local f = assert(io.open(script, "w"))
    f:write([[
local dm = require "devmapper"
local ok, err = pcall(dm.loop.create, ]] .. ("%q"):format(dir .. "/store") .. [[, "1MiB")
assert(not ok)
print(err.op, err.errno, err.name)
print(err.message)
local ok2, err2 = pcall(dm.create, "x", "0 8 zero")
print(err2.op, tostring(err2) == tostring(err))
]])
    f:close()
    local out, code = support.sh("build/dmlua " .. script)
    assert.equal(0, code, out)
    local op, errno, name = out:match("^(%S+)\t(%d+)\t(%S+)\n")
    assert.equal("preflight", op)
    assert.equal("/dev/mapper/control", name)
    assert.is_true(tonumber(errno) > 0)
    local message = out:match("\n([^\n]*)\n")
    assert.matches("device-mapper is not in this kernel, or its module is not loaded", message, 1, true)
    assert.matches("/dev/mapper/control", message, 1, true)
    assert.matches("`dmlua --sandbox script.lua` runs the script in a VM", message, 1, true)
    assert.matches("preflight\ttrue\n", out, 1, true)
    assert.is_false(support.opens(dir .. "/store"), "no backing file was made")
    assert.equal("", loops_of(dir .. "/store"), "no loop was attached")
  end)

  it("says when it is not root", function()
    local out = support.sh("setpriv --reuid=65534 --regid=65534 --clear-groups build/dmlua -e "
                           .. "'local ok, e = pcall(require(\"devmapper.core\").preflight, \"loop\") print(e)'")
    assert.matches("preflight '/dev/loop-control': not root: the loop driver needs root to open /dev/loop-control",
                   out, 1, true)
    assert.matches("dmlua --sandbox", out, 1, true)
  end)
end)

describe("preflight #kernel", function()
  it("passes where device-mapper and loop are usable, and says so once", function()
    assert.is_true(core.preflight("dm"))
    assert.is_true(core.preflight("loop"))
    assert.is_true(core.preflight("dm"))
  end)

  it("says not root to a user who may not open the control device", function()
    local out = support.sh("setpriv --reuid=65534 --regid=65534 --clear-groups build/dmlua -e "
                           .. "'local ok, e = pcall(require(\"devmapper\").list) print(e)'")
    assert.matches("preflight '/dev/mapper/control': not root: device-mapper needs root to open "
                   .. "/dev/mapper/control", out, 1, true)
  end)
end)
