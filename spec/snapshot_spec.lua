-- Snapshots: the targets without a kernel, the live snapshot (Point B) and the
-- overlay (Point A) on the real kernel, with data, faults and rollback.
local dm = require "devmapper"
local sleep = require("devmapper.core").sleep
local support = require "spec.support"
local refused, changing, fail_nth, world, none_suspended =
  support.refused, support.changing, support.fail_nth, support.world, support.none_suspended
after_each(support.cleanup)

-- A resolution context with made-up block devices, for checks without a kernel.
local function fake(devs)
  return {
    facts = function(d) return devs[type(d) == "table" and d.path or d] end,
    dev = function(d) return d end,
    name = function(d) return "/dev/" .. d end,
  }
end

-- The command lines a dry run of fn would have run.
local function dry(fn)
  local l = {}
  for line in support.dry(fn):gmatch("[^\n]+") do l[#l + 1] = line end
  return l
end

local function index_of(lines, pattern)
  for i, l in ipairs(lines) do if l:match(pattern) then return i end end
  error("no line matches " .. pattern .. " in:\n" .. table.concat(lines, "\n"))
end

describe("snapshot targets", function()
  it("format as dmsetup table prints them", function()
    assert.equal("0 4096 snapshot 7:0 7:1 P 8", tostring(dm.snapshot {origin = "7:0", cow = "7:1", length = 4096}))
    assert.equal("0 4096 snapshot 7:0 7:1 N 16",
                 tostring(dm.snapshot {origin = "7:0", cow = "7:1", persistent = false, chunk = 16, length = 4096}))
    assert.equal("0 4096 snapshot 7:0 7:1 PO 8",
                 tostring(dm.snapshot {origin = "7:0", cow = "7:1", persistent = "po", length = 4096}))
    assert.equal("0 4096 snapshot 7:0 7:1 P 8", tostring(dm.snapshot {"7:0", "7:1", chunk = "4KiB", length = 4096}))
    assert.equal("0 4096 snapshot-origin 7:0", tostring(dm.origin("7:0", {length = 4096})))
    assert.equal("0 4096 snapshot-merge 7:0 7:1 P 8",
                 tostring(dm.snapshot.merge {origin = "7:0", cow = "7:1", length = 4096}))
  end)

  it("round-trip dmsetup table text through parse", function()
    for _, text in ipairs {
      "0 2097152 snapshot 254:11 254:12 P 16",
      "0 2097152 snapshot 254:11 254:12 PO 8",
      "0 2097152 snapshot 254:11 254:12 N 32",
      "0 2097152 snapshot 254:11 254:12 P 8 2 discard_zeroes_cow discard_passdown_origin",
      "0 2097152 snapshot-origin 254:11",
      "0 2097152 snapshot-merge 254:11 254:12 P 16",
    } do
      assert.equal(text, tostring(dm.table.parse(text)))
    end
    local s = dm.table.parse("0 8 snapshot 254:11 254:12 p 16")[1]
    assert.same({"254:11", "254:12", "P", 16}, {s.origin, s.cow, s.persistent, s.chunk})
    assert.same({"254:11", "254:12"}, s:devices())
  end)

  it("take their default length from the origin", function()
    local ctx = fake {["7:0"] = {sectors = 4096, logical_block_size = 512, major = 7, minor = 0},
                      ["7:1"] = {sectors = 512, logical_block_size = 512, major = 7, minor = 1}}
    local t = dm.table {dm.snapshot {origin = "7:0", cow = "7:1"}}:targets(ctx)
    assert.equal(4096, t[1].length)
    assert.equal(4096, dm.table {dm.origin("7:0")}:targets(ctx)[1].length)
  end)

  it("are checked before the kernel sees them", function()
    local ctx = fake {
      ["7:0"] = {path = "/dev/loop0", sectors = 4096, logical_block_size = 512, major = 7, minor = 0},
      ["7:1"] = {path = "/dev/loop1", sectors = 512, logical_block_size = 512, major = 7, minor = 1},
      ["8:0"] = {path = "/dev/sda", sectors = 4096, logical_block_size = 4096, major = 8, minor = 0},
    }
    local function v(opts) return function() dm.table {dm.snapshot(opts)}:validate(ctx) end end
    refused(v {origin = "7:0", cow = "7:1", chunk = 12}, "field 'chunk' must be a power of 2 (sectors), got 12")
    refused(v {origin = "7:0", cow = "7:1", persistent = "X"}, "field 'persistent' must be P (persistent), PO")
    refused(v {origin = "7:0", cow = "7:1", persistent = 1}, "field 'persistent' must be true, false, \"P\", \"PO\" or \"N\"")
    refused(v {origin = "7:0", cow = "7:0"}, "field 'cow' must not be the origin (/dev/7:0)")
    refused(v {origin = "7:0", cow = "8:0", chunk = 4},
            "field 'chunk' 4 must be a multiple of the cow's logical block size (/dev/8:0: 8 sectors)")
    refused(v {origin = "8:0", cow = "7:1", chunk = 2}, "multiple of the origin's logical block size")
    refused(v {origin = "7:0", cow = "7:1", length = 8192}, "field 'length' must fit in the device")
    refused(v {cow = "7:1", length = 8}, "snapshot: field 'origin' is required")
    refused(v {origin = "7:0"}, "field 'cow' is required")
    refused(function() dm.table {dm.snapshot.merge {origin = "7:0", cow = "7:1", persistent = false}}:validate(ctx) end,
            "only a persistent store can be merged")
    dm.table {dm.snapshot {origin = "7:0", cow = "8:0"}}:validate(ctx)     -- 8 sectors = 4096 bytes: fine
    dm.table {dm.snapshot {origin = "7:0", cow = "7:1", chunk = 1}}:validate(ctx)
    dm.table {dm.snapshot {origin = "7:0", cow = "7:1", chunk = 0}}:validate(ctx)  -- the kernel's choice
  end)

  it("parse snapshot status", function()
    local st = dm.snapshot.status("397896/2097152 1560")
    assert.same({"active", 397896, 2097152, 1560, false, false, false},
                {st.state, st.used, st.total, st.metadata, st.invalid, st.overflow, st.merge_failed})
    assert.equal("397896/2097152 sectors used (1560 metadata)", tostring(st))
    assert.equal(16, dm.snapshot.status {type = "snapshot-merge", params = "16/2097152 16"}.metadata)
    assert.is_true(dm.snapshot.status("Invalid").invalid)
    assert.is_true(dm.snapshot.status("Overflow").overflow)
    assert.is_true(dm.snapshot.status("Merge failed").merge_failed)
    assert.equal("unknown", dm.snapshot.status("Unknown").state)
    refused(function() dm.snapshot.status(42) end, "expected status text")
  end)

  it("dm.snapshot is the target and carries the workflows", function()
    assert.equal("snapshot", dm.snapshot {origin = "7:0", cow = "7:1"}.type)
    for _, f in ipairs {"take", "overlay", "status", "merge", "prepare", "origin"} do
      assert.equal("function", type(dm.snapshot[f]), f)
    end
    assert.equal(dm.snapshot.origin, dm.origin)
  end)

  it("take loads every table first, then suspends, swaps and resumes (dry run)", function()
    local lines = dry(function()
      local l1, l3 = dm.loop.create("/tmp/dry-take1", "2MiB"), dm.loop.create("/tmp/dry-take3", "1MiB")
      local base = dm.create("dry-take", dm.linear(l1))
      local snap = dm.snapshot.take(base, {cow = l3, chunk = 16})
      assert.equal("/dev/mapper/dry-take-snap", snap.view.path)
      snap:release()
      base:remove()
    end)
    local real = index_of(lines, "^dmsetup create dry%-take%-real %-%-table '0 4096 linear 7:%d+ 0'$")
    local zero = index_of(lines, "^dd if=/dev/zero of='/dev/loop%d+%?' bs=512 count=16 conv=notrunc$")
    local view = index_of(lines, "^dmsetup create dry%-take%-snap %-%-readonly %-%-table '0 4096 snapshot 253:%d+ 7:%d+ P 16'$")
    local load = index_of(lines, "^dmsetup load dry%-take %-%-table '0 4096 snapshot%-origin 253:%d+'$")
    local suspend = index_of(lines, "^dmsetup suspend dry%-take$")
    local resume = index_of(lines, "^dmsetup resume dry%-take$")
    assert.is_true(real < zero and zero < view and view < load and load < suspend and suspend < resume)
    -- release: the origin's own table back (load first), then the snapshot and -real go
    local back = index_of(lines, "^dmsetup load dry%-take %-%-table '0 4096 linear 7:%d+ 0'$")
    local rm_view = index_of(lines, "^dmsetup remove %-%-retry dry%-take%-snap$")
    local rm_real = index_of(lines, "^dmsetup remove %-%-retry dry%-take%-real$")
    assert.is_true(resume < back and back < rm_view and rm_view < rm_real)
  end)

  it("overlay commit merges with snapshot-merge loaded first (dry run)", function()
    local lines = dry(function()
      local l1, l3 = dm.loop.create("/tmp/dry-ov1", "2MiB"), dm.loop.create("/tmp/dry-ov3", "1MiB")
      local ov = dm.snapshot.overlay(l1, {cow = l3, name = "dry-ov"})
      ov:commit()
    end)
    local make = index_of(lines, "^dmsetup create dry%-ov %-%-table '0 4096 snapshot 7:%d+ 7:%d+ P 8'$")
    local load = index_of(lines, "^dmsetup load dry%-ov %-%-table '0 4096 snapshot%-merge 7:%d+ 7:%d+ P 8'$")
    local suspend = index_of(lines, "^dmsetup suspend dry%-ov$")
    local resume = index_of(lines, "^dmsetup resume dry%-ov$")
    local remove = index_of(lines, "^dmsetup remove %-%-retry dry%-ov$")
    assert.is_true(make < load and load < suspend and suspend < resume and resume < remove)
  end)

  it("refuses a take with no COW, or of a loop, before any ioctl", function()
    local before = dm.kernel.total()
    refused(function() dm.snapshot.take("/dev/loop0", {cow = "/dev/loop1"}) end, "expected a device-mapper Device")
    assert.equal(before, dm.kernel.total())
    refused(function() dm.snapshot.overlay("7:0", {chunk = 3}) end, "field 'cow' is required")
  end)
end)

-- Run fn with the Nth state-changing operation failing, for N = 1, 2, ...
-- until it succeeds; after each failure, check(err). Returns how many failed.
local function each_fault(fn, check)
  support.defer(function() dm.kernel.fault = nil end)
  for n = 1, 40 do
    fail_nth(n)
    local ok, err = pcall(fn)
    dm.kernel.fault = nil
    if ok then return n - 1 end
    assert.matches("step '[^']+' failed: .*injected fault", tostring(err))
    assert.truthy(err.step)
    check(err, n)
  end
  error("the operation never succeeded")
end

local K, M = 1024, 1024 * 1024
local OFFSETS = {0, 40 * K, M + 512, 3 * M}

-- Write "tag@offset" at each offset, in one open (one sync).
local function fill(path, tag)
  local f = assert(io.open(path, "r+b"))
  for _, o in ipairs(OFFSETS) do
    f:seek("set", o)
    f:write(tag .. "@" .. o)
  end
  f:close()
  os.execute("sync")
end

local function holds(path, tag)
  for _, o in ipairs(OFFSETS) do
    local want = tag .. "@" .. o
    assert.equal(want, support.read(path, o, #want), ("%s at %d"):format(path, o))
  end
end

describe("snapshot #kernel", function()
  it("creates snapshot-origin and snapshot devices that dmsetup reads back", function()
    local l1, l2 = support.loops(2, "4MiB")
    local real = support.device("spec-sn-real", dm.linear(l1))
    dm.snapshot.prepare(l2, 16)
    local snap = support.device("spec-sn", dm.snapshot {origin = real, cow = l2, chunk = 16})
    local origin = support.device("spec-sn-origin", dm.origin(real))
    local want = ("0 8192 snapshot %s %s P 16"):format(real:devno(), l2:devno())
    assert.equal(want, support.dmsetup("table spec-sn"))
    assert.equal(want, support.text(snap:table()))
    assert.equal("0 8192 snapshot-origin " .. real:devno(), support.dmsetup("table spec-sn-origin"))
    local st = dm.snapshot.status(snap)
    assert.equal("active", st.state)
    assert.equal(8192, st.total)
    assert.equal(support.dmsetup("status spec-sn"):match("snapshot (%d+)/"), tostring(st.used))
    assert.equal(st.used, st.metadata)
    support.write(origin.path, 0, "changed")
    assert.is_true(dm.snapshot.status(snap).used > st.used)
    origin:remove()
    snap:remove()
  end)

  it("zeroes the COW's first chunk unless asked to reuse the store", function()
    local l1 = support.loops(1)
    support.write(l1.path, 0, "SnAp old header")
    support.write(l1.path, 8192, "beyond the chunk")
    dm.snapshot.prepare(l1, 16)
    assert.equal(("\0"):rep(8192), support.read(l1.path, 0, 8192))
    assert.equal("beyond the chunk", support.read(l1.path, 8192, 16))
  end)

  it("take: the view keeps the old bytes while the origin keeps changing; release restores", function()
    local l1, l3 = support.loops(2, "4MiB")
    local base = support.device("spec-base", dm.linear(l1))
    local own = support.text(base:table())
    fill(base.path, "old")
    local snap = dm.snapshot.take(base, {cow = l3, chunk = 8})
    support.defer(function() pcall(snap.release, snap) end)
    assert.equal("/dev/mapper/spec-base-snap", snap.view.path)
    assert.equal("0 8192 snapshot-origin " .. snap.real:devno(), support.dmsetup("table spec-base"))
    assert.equal(own, support.dmsetup("table spec-base-real"))
    assert.is_true(snap.view:info().readonly)
    local before = snap:usage()
    fill(base.path, "new")
    fill(base.path, "newer")  -- the data keeps changing
    holds(base.path, "newer")
    holds(snap.view.path, "old")
    local after = snap:usage()
    assert.is_true(after.used > before.used)
    assert.matches("^%d+/%d+ sectors used %(%d+ metadata%)$", tostring(after))
    snap:release()
    assert.same({"spec-base"}, support.names())
    assert.equal(own, support.text(base:table()))
    holds(base.path, "newer")
  end)

  it("take and release keep a hex-keyed crypt origin's key in the tables they copy", function()
    local l1, l3 = support.loops(2, "4MiB")
    local key = dm.key.random(64)
    local base = support.device("spec-secret", dm.crypt {l1, key = key, keyring = false})
    fill(base.path, "old")
    local snap = dm.snapshot.take(base, {cow = l3})
    support.defer(function() pcall(snap.release, snap) end)
    assert.is_true(support.table_holds_key("spec-secret-real", key), "spec-secret-real does not hold its key")
    holds(snap.view.path, "old") -- read through spec-secret-real
    fill(base.path, "new")
    holds(snap.view.path, "old")
    snap:release()
    assert.is_true(support.table_holds_key("spec-secret", key), "spec-secret does not hold its key")
    holds(base.path, "new")
  end)

  it("take refuses a device that already has a snapshot", function()
    local l1, l3, l4 = support.loops(3, "4MiB")
    local base = support.device("spec-base", dm.linear(l1))
    local snap = dm.snapshot.take(base, {cow = l3})
    support.defer(function() pcall(snap.release, snap) end)
    refused(function() dm.snapshot.take(base, {cow = l4}) end, "already has a snapshot")
  end)

  it("take and release are undone at every step that fails", function()
    local l1, l3 = support.loops(2, "4MiB")
    local base = support.device("spec-base", dm.linear(l1))
    local other = support.device("spec-other", dm.zero(8))
    local before = world()
    fill(base.path, "old")
    local snap
    local failures = each_fault(function() snap = dm.snapshot.take(base, {cow = l3}) end, function(err)
      assert.equal("take", err.op)
      none_suspended()
      assert.same(before, world())
    end)
    assert.equal(5, failures) -- create real, create snapshot, load, suspend, resume
    snap:release()
    assert.same(before, world())
    assert.truthy(other:info())

    -- release: each failure leaves nothing suspended; calling it again finishes
    local steps = {}
    for n = 1, 10 do
      local s = dm.snapshot.take(base, {cow = l3})
      fail_nth(n)
      local ok, err = pcall(s.release, s)
      dm.kernel.fault = nil
      if ok then break end
      assert.equal("release", err.op)
      steps[#steps + 1] = err.step
      none_suspended()
      s:release()
      assert.same(before, world())
    end
    assert.same({"load origin", "suspend origin", "resume origin", "remove snapshot", "remove real"}, steps)
    holds(base.path, "old")
  end)

  it("overlay: the base stays untouched, discard brings it back, commit makes it permanent", function()
    local l1, l3 = support.loops(2, "4MiB")
    local base = support.device("spec-base", dm.linear(l1))
    local own = support.text(base:table())
    fill(base.path, "base")
    local ov = dm.snapshot.overlay(base, {cow = l3})
    support.defer(function() pcall(ov.discard, ov) end)
    assert.equal("/dev/mapper/spec-base-overlay", ov.view.path)
    assert.equal(("0 8192 snapshot %s %s P 8"):format(base:devno(), l3:devno()), support.dmsetup("table spec-base-overlay"))
    holds(ov.view.path, "base")
    fill(ov.view.path, "scratch")
    holds(ov.view.path, "scratch")
    holds(base.path, "base")
    assert.is_true(ov:usage().used > ov:usage().metadata)
    ov:discard()
    assert.same({"spec-base"}, support.names())
    holds(base.path, "base")

    -- a new overlay on the same COW starts empty: its first chunk was zeroed
    ov = dm.snapshot.overlay(base, {cow = l3})
    holds(ov.view.path, "base")
    fill(ov.view.path, "kept")
    holds(base.path, "base")
    ov:commit()
    assert.same({"spec-base"}, support.names())
    assert.equal(own, support.text(base:table()))
    holds(base.path, "kept")
    refused(function() ov:commit() end, "already discarded or committed")
  end)

  it("overlay on a read-only loop with a volatile store (the live CD)", function()
    local dir = support.tmpdir()
    local f = assert(io.open(dir .. "/image", "wb"))
    f:write(("\0"):rep(4 * M))
    f:close()
    local image = dm.loop.attach(dir .. "/image", {readonly = true})
    support.defer(function() image:detach() end)
    local ram = support.loops(1, "1MiB")
    local ov = dm.snapshot.overlay(image, {cow = ram, persistent = false, name = "spec-live"})
    support.defer(function() pcall(ov.discard, ov) end)
    fill(ov.view.path, "live")
    holds(ov.view.path, "live")
    assert.equal(("\0"):rep(8), support.read(image.path, 0, 8))
    refused(function() ov:commit() end, "needs a persistent store")
    ov:discard()
    assert.same({}, support.names())
  end)

  it("overlay, discard and commit are undone at every step that fails", function()
    local l1, l3 = support.loops(2, "4MiB")
    local base = support.device("spec-base", dm.linear(l1))
    local before = world()
    fill(base.path, "base")
    local ov
    assert.equal(1, each_fault(function() ov = dm.snapshot.overlay(base, {cow = l3}) end, function(err)
      assert.equal("overlay", err.op)
      assert.equal("create overlay", err.step)
      none_suspended()
      assert.same(before, world())
    end))
    assert.equal(1, each_fault(function() ov:discard() end, function(err)
      assert.equal("remove overlay", err.step)
      none_suspended()
    end))
    assert.same(before, world())

    local steps = {}
    for n = 1, 10 do
      ov = dm.snapshot.overlay(base, {cow = l3})
      fill(ov.view.path, "merged" .. n)
      fail_nth(n)
      local ok, err = pcall(ov.commit, ov)
      dm.kernel.fault = nil
      if ok then
        holds(base.path, "merged" .. n)
        break
      end
      assert.equal("commit", err.op)
      steps[#steps + 1] = err.step
      none_suspended()
      if err.step == "remove overlay" then
        ov:commit()                       -- already merged: finishes
        holds(base.path, "merged" .. n)
      else
        holds(ov.view.path, "merged" .. n) -- still the overlay it was
        ov:discard()
      end
      assert.same(before, world())
    end
    assert.same({"load merge", "suspend merge", "resume merge", "remove overlay"}, steps)
  end)

  it("volatile (Point A in place): a mounted filesystem keeps running, commit merges while it is in use", function()
    local l1, l3 = support.loops(2, "8MiB")
    local base = support.device("spec-base", dm.linear(l1))
    local own = support.text(base:table())
    local mnt = support.tmpdir()
    assert.equal(0, select(2, support.sh("mkfs.ext2 -q " .. base.path)))
    assert.equal(0, select(2, support.sh(("mount %s %s && echo before > %s/before && sync"):format(base.path, mnt, mnt))))
    support.defer(function() support.sh("umount " .. mnt) end)
    -- a process writes all along, as the article's (one process: an exec is slow in the VM)
    local writer = ("build/dmlua -e \"local sleep, i = require('devmapper.core').sleep, 0 "
                    .. "while not io.open('%s/stop') do i = i + 1; local f = io.open('%s/log', 'a'); "
                    .. "f:write(i, '\\n'); f:close(); sleep(0.02) end; io.open('%s/stopped', 'w'):close()\" "
                    .. ">/dev/null 2>&1 &"):format(mnt, mnt, mnt)
    os.execute(writer)
    support.defer(function() support.sh("touch " .. mnt .. "/stop") end)
    local function stop_writer()
      support.sh("touch " .. mnt .. "/stop")
      for _ = 1, 200 do
        if support.opens(mnt .. "/stopped") then return end
        sleep(0.05)
      end
      error("the writer did not stop")
    end

    local ov = dm.snapshot.volatile(base, {cow = l3})
    support.defer(function() pcall(ov.discard, ov) end)
    assert.equal(base, ov.view)
    assert.equal(("0 16384 snapshot %s %s P 8"):format(ov.real:devno(), l3:devno()), support.dmsetup("table spec-base"))
    assert.equal(own, support.dmsetup("table spec-base-real"))
    -- from here on every write lands in the COW: spec-base-real does not change
    local frozen = support.read(ov.real.path, 0, 8 * 1024 * 1024)
    sleep(0.5)
    os.execute("sync")
    assert.is_true(support.read(ov.real.path, 0, 8 * 1024 * 1024) == frozen, "spec-base-real changed")
    assert.is_true(ov:usage().used > ov:usage().metadata)
    refused(function() ov:discard() end, "is still open")

    ov:commit() -- the merge runs while the filesystem is mounted and written to
    assert.equal(own, support.dmsetup("table spec-base"))
    assert.same({"spec-base"}, support.names())
    stop_writer()
    assert.equal(0, select(2, support.sh("umount " .. mnt)))
    local out, code = support.sh("e2fsck -fn " .. base.path)
    assert.equal(0, code, out)
    assert.equal(0, select(2, support.sh(("mount %s %s"):format(base.path, mnt))))
    assert.equal("before\n", support.read(mnt .. "/before", 0, 100))
    local n = tonumber((support.sh("wc -l < " .. mnt .. "/log")))
    assert.is_true(n > 10, "the writer wrote " .. tostring(n) .. " lines")

    -- discard: what was written after volatile is gone, once the device is closed
    ov = dm.snapshot.volatile(base, {cow = l3})
    support.sh(("echo scratch > %s/scratch && sync"):format(mnt))
    assert.equal(0, select(2, support.sh("umount " .. mnt)))
    ov:discard()
    assert.equal(own, support.dmsetup("table spec-base"))
    assert.equal(0, select(2, support.sh(("mount %s %s"):format(base.path, mnt))))
    assert.is_false(support.opens(mnt .. "/scratch"))
    assert.equal(n, tonumber((support.sh("wc -l < " .. mnt .. "/log"))))
  end)

  it("commit refuses to merge into a read-only base, as lvm2 does", function()
    local dir = support.tmpdir()
    local lw = support.loops(1, "4MiB")
    local f = io.open(dir .. "/ro.img", "wb"); f:write(("\0"):rep(4 * 1024 * 1024)); f:close()
    local ro = dm.loop.attach(dir .. "/ro.img", {readonly = true})
    support.defer(function() pcall(ro.detach, ro) end)
    local ov = dm.snapshot.overlay(ro, {cow = lw})
    support.defer(function() pcall(ov.discard, ov) end)
    refused(function() ov:commit() end, "can not merge into " .. ro.path .. ": it is read-only")
    ov:discard()
    local base = support.device("spec-ro", dm.linear(lw), {readonly = true})
    local l2 = support.loops(1, "4MiB")
    ov = dm.snapshot.volatile(base, {cow = l2})
    refused(function() ov:commit() end, "/dev/mapper/spec-ro-real: it is read-only")
    ov:discard()
    assert.same({"spec-ro"}, support.names())
  end)

  it("undoes take and overlay when a dm.scope closes", function()
    local l1, l3, l4 = support.loops(3, "4MiB")
    local base = support.device("spec-base", dm.linear(l1))
    local own = support.text(base:table())
    do
      local scope <close> = dm.scope()
      dm.snapshot.take(base, {cow = l3})
      dm.snapshot.overlay(base, {cow = l4})
      assert.equal(4, #support.names())
    end
    assert.same({"spec-base"}, support.names())
    assert.equal(own, support.text(base:table()))
  end)

  it("counts only the operations it needs", function()
    local l1, l3 = support.loops(2, "4MiB")
    local base = support.device("spec-base", dm.linear(l1))
    local n = changing()
    local snap = dm.snapshot.take(base, {cow = l3})
    assert.equal(5, changing() - n)
    n = changing()
    snap:release()
    assert.equal(5, changing() - n)
  end)

  it("the article and live CD examples run and leave nothing behind", function()
    local dir = support.tmpdir()
    for _, name in ipairs {"article", "livecd"} do
      local out, code = support.sh(("build/dmlua examples/%s.lua %s"):format(name, dir))
      assert.equal(0, code, out)
      assert.same({}, support.names(), name)
      local loops = support.sh("losetup -a")
      assert.falsy(loops:find(dir, 1, true), name .. " left a loop: " .. loops)
    end
  end)
end)
