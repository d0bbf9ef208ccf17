-- Devices on the real kernel, with dmsetup as the oracle.
local dm = require "devmapper"
local support = require "spec.support"
after_each(support.cleanup)

describe("device #kernel", function()
  it("creates a device that dmsetup sees, with its node, and removes it", function()
    local l1, l2 = support.loops(2)
    local t = dm.table {dm.linear(l1, {offset = 2048}), dm.linear(l2)}
    local dev = support.device("onenahalf", t, {uuid = "DMSPEC-onenahalf"})
    assert.equal("/dev/mapper/onenahalf", dev.path)
    assert.equal(6144, dev:sectors())
    assert.equal(support.text(t), support.dmsetup("table onenahalf"))
    assert.equal(support.text(t), support.text(dev:table()))
    assert.is_true(support.opens(dev.path), "node made without udev")
    local info = dev:info()
    assert.is_true(info.exists)
    assert.is_false(info.suspended)
    assert.is_false(info.readonly)
    assert.is_true(info.live_table)
    assert.is_false(info.inactive_table)
    assert.equal(0, info.open_count)
    assert.equal("DMSPEC-onenahalf", info.uuid)
    assert.equal(support.dmsetup("info -c --noheadings -o major,minor onenahalf"), info.major .. ":" .. info.minor)
    dev:remove()
    assert.is_nil(dev:info())
    assert.equal("", support.dmsetup("ls --target linear"):gsub("No devices found", ""))
    assert.is_false(support.opens(dev.path))
  end)

  it("lists every device in one call, with major:minor", function()
    local l1 = support.loops(1)
    local a = support.device("spec-a", dm.linear(l1, {length = 8}))
    local b = support.device("spec-b", dm.zero(8))
    local seen = {}
    for _, d in ipairs(dm.list()) do seen[d.name] = d.major .. ":" .. d.minor end
    assert.equal(a:devno(), seen["spec-a"])
    assert.equal(b:devno(), seen["spec-b"])
    local before = dm.kernel.total()
    dm.list()
    assert.equal(1, dm.kernel.total() - before)
  end)

  it("loads into the inactive slot, and resume swaps it in", function()
    local l1, l2 = support.loops(2)
    local dev = support.device("spec-load", dm.linear(l1))
    dev:load(dm.linear(l2))
    assert.is_true(dev:info().inactive_table)
    assert.equal(support.text(dm.table {dm.linear(l2)}), support.text(dev:table {inactive = true}))
    assert.equal(support.text(dm.table {dm.linear(l1)}), support.text(dev:table()))
    dev:suspend()
    assert.is_true(dev:info().suspended)
    assert.matches("SUSPENDED", support.dmsetup("info spec-load"), 1, true)
    dev:resume()
    assert.is_false(dev:info().suspended)
    assert.equal(support.text(dm.table {dm.linear(l2)}), support.text(dev:table()))
  end)

  it("clears an inactive table", function()
    local l1 = support.loops(1)
    local dev = support.device("spec-clear", dm.linear(l1))
    dev:load(dm.zero(8))
    dev:clear()
    assert.is_false(dev:info().inactive_table)
  end)

  it("suspends with noflush and nolockfs", function()
    local dev = support.device("spec-susp", dm.zero(8))
    dev:suspend {noflush = true, nolockfs = true}
    assert.is_true(dev:info().suspended)
    dev:resume()
    assert.is_false(dev:info().suspended)
  end)

  it("reloads safely: a refused table leaves the old one live and the device resumed", function()
    local l1 = support.loops(1)
    local dev = support.device("spec-reload", dm.linear(l1))
    local ok = pcall(dev.reload, dev, "0 8 no-such-target x") -- the kernel refuses it
    assert.is_false(ok)
    local info = dev:info()
    assert.is_false(info.suspended)
    assert.is_false(info.inactive_table)
    assert.equal(support.text(dm.table {dm.linear(l1)}), support.text(dev:table()))
    dev:reload(dm.zero(4096))
    assert.equal("0 4096 zero", support.text(dev:table()))
  end)

  it("renames", function()
    local dev = support.device("spec-old", dm.zero(8))
    dev:rename("spec-new")
    assert.equal("spec-new", dev.name)
    assert.truthy(dev:info())
    assert.equal("", (support.dmsetup("info spec-old"):gsub(".*not exist.*", "")))
    assert.is_true(support.opens("/dev/mapper/spec-new"))
  end)

  it("creates read-only devices", function()
    local dev = support.device("spec-ro", dm.zero(8), {readonly = true})
    assert.is_true(dev:info().readonly)
    assert.is_false(support.writable(dev.path))
  end)

  it("reads status, deps, the driver version and target versions", function()
    local l1, l2 = support.loops(2)
    local dev = support.device("spec-status", dm.striped {chunk = 16, l1, l2})
    local st = dev:status()
    assert.equal("striped", st[1].type)
    assert.equal(support.dmsetup("status spec-status"), ("%d %d %s %s"):format(st[1].start, st[1].length, st[1].type, st[1].params))
    local deps = {}
    for _, d in ipairs(dev:deps()) do deps[#deps + 1] = d.path end
    table.sort(deps)
    assert.same({l1.path, l2.path}, deps)
    assert.matches("^%d+%.%d+%.%d+$", dm.version())
    assert.equal(support.dmsetup("version"):match("Driver version:%s+(%S+)"), dm.version())
    local targets = dm.targets()
    assert.matches("^%d+%.%d+%.%d+$", targets.linear)
    assert.matches("^%d+%.%d+%.%d+$", targets.striped)
  end)

  it("sends messages and gets the target's answer", function()
    local l1 = support.loops(1)
    local dev = support.device("spec-msg", dm.linear(l1))
    local ok, err = pcall(dev.message, dev, "hello")
    assert.is_false(ok) -- linear takes no messages; the kernel says so
    assert.equal("message", err.op)
    assert.equal("spec-msg", err.name)
    assert.equal(22, err.errno)
  end)

  it("removes a busy device after a retry, and defers on request", function()
    local dev = support.device("spec-busy", dm.zero(8))
    local f = assert(io.open(dev.path, "rb"))
    local ok, err = pcall(dev.remove, dev)
    assert.is_false(ok)
    assert.equal(16, err.errno) -- EBUSY
    dev:remove {deferred = true}
    assert.is_true(dev:info().deferred_remove)
    f:close()
    -- the kernel removes it from a work queue after the last close
    for _ = 1, 50 do
      if not dev:info() then break end
      require("devmapper.core").sleep(0.1)
    end
    assert.is_nil(dev:info())
  end)

  it("remove {force = true}: an open device fails all I/O at once, and goes once closed", function()
    local l1 = support.loops(1)
    local dev = support.device("spec-force", dm.linear(l1))
    local f = assert(io.open(dev.path, "rb"))
    local ok, err = pcall(dev.remove, dev, {force = true, retry = false})
    assert.is_false(ok)
    assert.matches("it is still open, and now fails all I/O %(the error target%)", tostring(err))
    assert.equal("0 4096 error", support.dmsetup("table spec-force"))
    assert.is_false(dev:info().suspended)
    assert.is_nil(f:read(512))
    f:close()
    dev:remove {force = true}
    assert.same({}, support.names())
  end)

  it("carries the kernel's own reason when it refuses a table", function()
    -- we pass unknown target types through; the kernel must refuse this one
    local ok, err = pcall(dm.create, "spec-bad", "0 8 no-such-target 1 2 3")
    assert.is_false(ok)
    assert.equal("create", err.op)
    assert.equal("spec-bad", err.name)
    assert.equal(22, err.errno)
    assert.matches("kernel: device-mapper:", err.message, 1, true)
    assert.matches("no-such-target", err.message, 1, true)
    assert.is_false((pcall(dm.device, "spec-bad")), "nothing half-built")
  end)

  it("refuses a bad table before the kernel", function()
    local l1 = support.loops(1)
    local before = dm.kernel.total()
    local ok, err = pcall(dm.create, "spec-big", dm.linear(l1, {offset = 4000, length = 200}))
    assert.is_false(ok)
    assert.matches("field 'length' must fit in the device", tostring(err), 1, true)
    assert.equal(before, dm.kernel.total(), "no ioctl was made")
  end)

  it("refuses a target that holds a NUL byte in C, before the kernel", function()
    local core = require "devmapper.core"
    for _, t in ipairs {{start = 0, length = 8, type = "zero\0x", params = ""},
                        {start = 0, length = 8, type = "error", params = "a\0b"}} do
      local ok, err = pcall(core.dm_create, "spec-nul", {t})
      assert.is_false(ok)
      assert.matches("holds a NUL byte", tostring(err), 1, true)
      assert.is_nil(core.dm_info("spec-nul"))
    end
  end)

  it("synchronises with udev only when udev runs", function()
    local udev = os.execute("test -S /run/udev/control") == true
    assert.equal(udev, require("devmapper.core").dm_udev())
  end)

  it("waits for udev at most its bound, then goes on, says what was stuck, and has the node", function()
    local l1 = support.loops(1)
    local warnings, warn, bound = {}, dm.kernel.warn, dm.kernel.udev_timeout()
    dm.kernel.warn = function(m) warnings[#warnings + 1] = m end
    support.defer(function() dm.kernel.warn = warn; dm.kernel.udev_timeout(bound) end)
    if not require("devmapper.core").dm_udev() then
      -- no udev (the other lane): the module makes the node and never waits
      local dev = support.device("spec-noudev", dm.linear(l1))
      assert.is_true(support.opens(dev.path))
      dev:remove()
      assert.is_false(support.opens(dev.path))
      assert.same({}, warnings)
      return
    end
    local udevd = support.sh("pidof systemd-udevd"):match("^[%d ]+")
    assert.truthy(udevd, "systemd-udevd is not running")
    assert(os.execute("kill -STOP " .. udevd))
    support.defer(function() os.execute("kill -CONT " .. udevd) end)
    dm.kernel.udev_timeout(1)
    local t0 = require("devmapper.core").monotonic()
    local dev = support.device("spec-udev-stuck", dm.linear(l1))
    assert.is_true(require("devmapper.core").monotonic() - t0 < 5, "the wait was not bounded")
    assert.matches("create 'spec-udev-stuck': udev did not finish with its events within 1 s", warnings[1] or "", 1, true)
    assert.is_true(support.opens(dev.path), "no node for " .. dev.path)
    dev:remove()
    assert.matches("remove 'spec-udev-stuck': udev did not finish", warnings[#warnings], 1, true)
    assert.is_nil(dev:info())
    assert.is_false(support.opens(dev.path))
    -- once udev runs again, operations wait for it as before
    assert(os.execute("kill -CONT " .. udevd))
    dm.kernel.udev_timeout(bound)
    local n = #warnings
    local again = support.device("spec-udev-again", dm.linear(l1))
    assert.is_true(support.opens(again.path))
    again:remove()
    assert.equal(n, #warnings, table.concat(warnings, "\n"))
  end)
end)
