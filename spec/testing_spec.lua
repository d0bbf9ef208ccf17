-- devmapper.testing: the helpers users' specs get (spec/support.lua uses them too).
local dm = require "devmapper"
local testing = require "devmapper.testing"
local support = require "spec.support"
testing.install()

describe("devmapper.testing", function()
  it("refuses an unknown fault kind, naming the field", function()
    support.refused(function() testing.fault("melt", "7:0") end, "field 'kind' must be error, flakey or delay")
  end)
end)

describe("devmapper.testing #kernel", function()
  it("gives scratch loops and fault devices: error fails every I/O, flakey drops writes, delay delays", function()
    local disk = testing.loops(1, "4MiB")
    local bad = testing.fault("error", disk)
    local h = assert(io.open(bad.path, "rb"))
    assert.is_nil(h:read(512), "a read of the error device fails")
    h:close()
    local lossy = testing.fault("flakey", disk, {features = {"drop_writes"}})
    support.write(lossy.path, 0, "lost")
    assert.equal(("\0"):rep(4), support.read(disk.path, 0, 4))
    local slow = testing.fault("delay", disk, {delay = 200})
    local t0 = require("devmapper.core").monotonic()
    support.read(slow.path, 0, 4)
    assert.is_true(require("devmapper.core").monotonic() - t0 >= 0.15)
  end)

  it("fails a test that leaves a device, a loop or a key behind, naming them, and takes them away", function()
    local dir = support.tmpdir()
    local f = assert(io.open(dir .. "/leaky_spec.lua", "w"))
    f:write(([[
      local dm = require "devmapper"
      require("devmapper.testing").install()
      it("leaks", function()
        dm.create("leaky", dm.zero(8))
        dm.loop.create("%s/leak.img", "1MiB")
        dm.key.random(32):to_keyring("devmapper:leaky")
      end)
      it("is clean", function() assert.same({}, dm.list()) end)
    ]]):format(dir))
    f:close()
    local out, code = support.sh(("build/dmlua /usr/bin/busted -o plainTerminal %s/leaky_spec.lua"):format(dir))
    assert.equal(1, code, out)
    assert.matches("left behind: device leaky, loop /dev/loop%d+ %(" .. dir:gsub("%p", "%%%0") .. "/leak.img%), key logon devmapper:leaky", out)
    assert.matches("2 successes / 0 failures / 1 error", out, 1, true) -- the leak is the after_each's error
    assert.same({}, support.names())
    assert.same({}, dm.loop.find(dir .. "/leak.img"))
  end)
end)
