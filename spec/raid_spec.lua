-- dm-raid: the raid target built from Lua and read from text, checked
-- before the kernel (host); on the kernel, raid1 and raid5 sets as stack
-- members: data through them, status until in sync, the check action and
-- its mismatch count, a leg failed under a set, re-apply and teardown.
local dm = require "devmapper"
local core = require "devmapper.core"
local support = require "spec.support"
local refused = support.refused
after_each(support.cleanup)

-- made-up devices for the host lane: 7:N of 16 MiB (32768 sectors), 7:9 of 64 KiB
local ctx = {}
function ctx.facts(d)
  local p = type(d) == "table" and d.path or d
  local minor = tonumber(tostring(p):match("^7:(%d+)$") or tostring(p):match("^/dev/loop(%d+)$"))
  if not minor then core.error {op = "blkdev", name = tostring(d), errno = 19, message = "no such block device"} end
  return {major = 7, minor = minor, sectors = minor == 9 and 128 or 32768, logical_block_size = 512,
          path = "/dev/loop" .. minor}
end
function ctx.name(d) return ctx.facts(d).path end
function ctx.dev(d) local f = ctx.facts(d) return f.major .. ":" .. f.minor end

local function text(seg) local t = dm.table {seg} t:validate(ctx) return support.text(t:text(ctx)) end
local function pairs_of(n, meta)
  local d = {}
  for i = 1, n do d[i] = {metadata = meta and ("7:%d"):format(2 * i - 2) or nil, data = ("7:%d"):format(2 * i - 1)} end
  return d
end

describe("raid", function()
  it("builds tables in the kernel's order, and reads them back as themselves", function()
    assert.equal("0 32768 raid raid1 1 0 2 7:0 7:1 7:2 7:3", text(dm.raid {type = "raid1", devices = pairs_of(2, true)}))
    assert.equal("0 32768 raid raid1 8 0 nosync daemon_sleep 1000 write_mostly 0 region_size 1024 2 - 7:1 - 7:3",
                 text(dm.raid {type = "raid1", devices = pairs_of(2), region_size = 1024, nosync = true,
                               write_mostly = 0, daemon_sleep = 1000}))
    assert.equal("0 65536 raid raid5_ls 7 64 rebuild 0 rebuild 2 stripe_cache 512 3 7:0 7:1 7:2 7:3 7:4 7:5",
                 text(dm.raid {type = "raid5_ls", chunk = 64, rebuild = {2, 0}, stripe_cache = 512,
                               devices = pairs_of(3, true)}))
    assert.equal("0 65536 raid raid5_ls 1 128 3 - 7:1 - 7:3 - 7:5",
                 text(dm.raid {type = "raid5_ls", chunk = "64KiB", devices = pairs_of(3)}))
    -- raid10: the length holds each block twice over the devices
    assert.equal("0 32768 raid raid10 5 64 raid10_copies 2 raid10_format far 2 7:0 7:1 7:2 7:3",
                 text(dm.raid {type = "raid10", chunk = 64, raid10_copies = 2, raid10_format = "far",
                               devices = pairs_of(2, true)}))
    assert.equal("0 131072 raid raid6_zr 1 64 6 " .. "- 7:1 - 7:3 - 7:5 - 7:7 - 7:9 - 7:11",
                 (function()
                   local d = pairs_of(6)
                   d[5].data = "7:10" -- 7:9 is small
                   return text(dm.raid {type = "raid6_zr", chunk = 64, devices = d}):gsub("7:10", "7:9")
                 end)())
    -- a missing leg, a journal
    assert.equal("0 32768 raid raid1 1 0 2 - 7:1 - -",
                 text(dm.raid {type = "raid1", devices = {{data = "7:1"}, {data = "-"}}}))
    local t = dm.table.parse("0 32768 raid RAID1 5 0 WRITE_MOSTLY 1 rebuild 1 2 7:0 7:1 7:2 7:3")
    local seg = t[1]
    assert.equal("raid1", seg.raid_type)
    assert.same({chunk = 0, rebuild = {1}, write_mostly = {1}}, seg.raid_params)
    assert.same({{metadata = "7:0", data = "7:1"}, {metadata = "7:2", data = "7:3"}}, seg.raid_devs)
    assert.equal("0 32768 raid raid1 5 0 rebuild 1 write_mostly 1 2 7:0 7:1 7:2 7:3", support.text(t:text(ctx)))
    assert.same({"7:0", "7:2", "7:1", "7:3"}, seg:devices()) -- metadata devices, then data devices
  end)

  it("refuses what the kernel refuses, and what it would read back otherwise, naming field and rule", function()
    local function raid(o)
      return function()
        o.devices = o.devices or pairs_of(2)
        local t = dm.table {dm.raid(o)}
        t:validate(ctx)
      end
    end
    -- raid types
    refused(raid {type = "raid5"}, "field 'raid_type' must be a kernel raid type: lvm's raid5 is raid5_ls")
    refused(raid {type = "raid7"}, "field 'raid_type' must be a raid type (raid0, raid1,")
    refused(raid {type = "raid1", raid_type = "raid1"}, "field 'type' is given twice")
    -- device counts
    refused(raid {type = "raid5_ls", chunk = 64, devices = pairs_of(1)}, "field 'raid_devs' raid5_ls needs more than 1 device")
    refused(raid {type = "raid6_zr", chunk = 64, devices = pairs_of(3)}, "field 'raid_devs' raid6_zr needs at least 4 devices")
    refused(raid {type = "raid10", chunk = 64, devices = pairs_of(2)},
            "field 'raid_devs[1].metadata' is required for raid10")
    refused(raid {type = "raid10", chunk = 64, raid10_copies = 3, devices = pairs_of(2, true)},
            "field 'raid10_copies' must be from 2 to the number of devices (2), got 3")
    refused(raid {type = "raid1", devices = {}}, "field 'raid_devs' must name at least 1 device")
    refused(raid {type = "raid1", devices = {{data = "-"}, {data = "-"}}}, "field 'raid_devs' must hold at least one data device")
    refused(raid {type = "raid1", devices = {{metadata = "7:0", data = "-"}, {data = "7:3"}}},
            "field 'raid_devs[1].data' must be a device when its metadata is one")
    refused(raid {type = "raid1", devices = {{data = "7:1"}, {data = "7:1"}}},
            "field 'raid_devs[2].data' /dev/loop1 is also raid_devs[1].data")
    refused(raid {type = "raid1", devices = {{metadata = "7:1", data = "7:1"}}},
            "field 'raid_devs[1].data' /dev/loop1 is also raid_devs[1].metadata")
    refused(raid {type = "raid1", devices = {{data = "7:1", meta = "7:0"}}}, "field 'raid_devs[1]' has no field 'meta'")
    -- chunk
    refused(raid {type = "raid1", chunk = 8}, "field 'chunk' must be 0 for raid1 (the kernel ignores it and prints 0)")
    refused(raid {type = "raid5_ls", devices = pairs_of(3)}, "field 'chunk' is required for raid5_ls (sectors, a power of 2 of at least 8)")
    refused(raid {type = "raid5_ls", chunk = 48, devices = pairs_of(3)}, "field 'chunk' must be a power of 2 of at least 8")
    refused(raid {type = "raid5_ls", chunk = 4, devices = pairs_of(3)}, "field 'chunk' must be a power of 2 of at least 8")
    refused(raid {type = "raid5_ls", chunk = 64, devices = pairs_of(3), length = 65535},
            "field 'length' 65535 must divide into the raid5_ls's 2 data devices")
    refused(raid {type = "raid1", length = 32769}, "must fit in the device")
    -- indexes
    refused(raid {type = "raid1", rebuild = 2}, "field 'rebuild' index 2 is out of range: the raid set has 2 devices (0 to 1)")
    refused(raid {type = "raid1", rebuild = {0, 0}}, "field 'rebuild' is given twice for index 0")
    refused(raid {type = "raid1", rebuild = -1}, "field 'rebuild' index must be at least 0")
    refused(raid {type = "raid1", rebuild = "1"}, "field 'rebuild' index must be an integer")
    refused(raid {type = "raid1", write_mostly = {0, 1}}, "field 'write_mostly' can not name every device (2 of 2)")
    refused(raid {type = "raid1", devices = {{data = "7:1"}, {data = "-"}}, rebuild = 1},
            "field 'rebuild' index 1 names raid_devs[2], which has no data device")
    -- flags that exclude each other, parameters of other levels
    refused(raid {type = "raid1", sync = true, nosync = true}, "field 'nosync' excludes sync")
    refused(raid {type = "raid1", nosync = true, rebuild = 0}, "field 'rebuild' excludes nosync")
    refused(raid {type = "raid1", sync = "yes"}, "field 'sync' must be true or false")
    refused(raid {type = "raid6_zr", chunk = 64, nosync = true, devices = pairs_of(4)},
            "field 'nosync' is not a parameter of raid6_zr")
    refused(raid {type = "raid5_ls", chunk = 64, write_mostly = 0, devices = pairs_of(3)},
            "field 'write_mostly' is not a parameter of raid5_ls")
    refused(raid {type = "raid1", stripe_cache = 256}, "field 'stripe_cache' is not a parameter of raid1")
    refused(raid {type = "raid1", raid10_format = "near"}, "field 'raid10_format' is not a parameter of raid1")
    refused(raid {type = "raid0", chunk = 64, nosync = true}, "field 'nosync' is not a parameter of raid0")
    -- values
    refused(raid {type = "raid1", region_size = 0}, "field 'region_size' 0 would have the kernel choose one")
    refused(raid {type = "raid1", region_size = 1000}, "field 'region_size' must be a power of 2")
    refused(raid {type = "raid1", region_size = 65536}, "field 'region_size' 65536 is larger than the target")
    refused(raid {type = "raid1", max_write_behind = 256}, "field 'max_write_behind' is not supported: the kernel halves it")
    refused(raid {type = "raid1", min_recovery_rate = 100, max_recovery_rate = 10},
            "field 'min_recovery_rate' 100 must not be above max_recovery_rate (10)")
    refused(raid {type = "raid1", daemon_sleep = 2 ^ 31}, "field 'daemon_sleep' must be an integer")
    refused(raid {type = "raid1", daemon_sleep = 1 << 31}, "field 'daemon_sleep' must be at most 2147483647")
    refused(raid {type = "raid1", data_offset = 8}, "field 'data_offset' must be 0 or at least 32 sectors")
    refused(raid {type = "raid1", delta_disks = 0}, "field 'delta_disks' must be from 1 to 251 devices")
    refused(raid {type = "raid10", chunk = 64, raid10_format = "diagonal", devices = pairs_of(2, true)},
            "field 'raid10_format' must be one of near, far, offset")
    refused(raid {type = "raid5_ls", chunk = 64, stripe_cache = 16, devices = pairs_of(3)},
            "field 'stripe_cache' 16 is below chunk/2 (32)")
    refused(raid {type = "raid5_ls", chunk = 16, stripe_cache = 16, devices = pairs_of(3)},
            "field 'stripe_cache' must be from 17 to 32768 entries")
    refused(raid {type = "raid5_ls", chunk = 64, journal_mode = "writeback", devices = pairs_of(3)},
            "field 'raid_params' option 'journal_mode' needs option 'journal_dev'")
    refused(raid {type = "raid5_ls", chunk = 64, journal_dev = "7:9", devices = pairs_of(3)},
            "field 'journal_dev' /dev/loop9 (128 sectors) is smaller than the 4 MiB a journal needs")
    refused(raid {type = "raid1", bogus = 1}, "field 'bogus' is not a field of raid")
    -- text: counts, words, names
    local function parse(s) return function() dm.table.parse(s):validate(ctx) end end
    refused(parse "0 32768 raid raid1 0 2 - 7:1 - 7:3", "field 'raid_params' must hold the chunk size")
    refused(parse "0 32768 raid raid1 2 0 region_size 2 - 7:1 - 7:3", "option 'region_size' needs a value")
    refused(parse "0 32768 raid raid1 2 0 bogus 2 - 7:1 - 7:3", "unknown raid parameter 'bogus'")
    refused(parse "0 32768 raid raid1 5 0 2 - 7:1 - 7:3", "unknown raid parameter '2'")
    refused(parse "0 32768 raid raid1 1 0 3 - 7:1 - 7:3", "field 'raid_devs' count 3 needs 6 words, but 4 follow")
    refused(parse "0 32768 raid raid1 1 0 0", "field '#raid_devs' must be at least 1")
    refused(parse "0 32768 raid raid1 +1 0 2 - 7:1 - 7:3", "must be a decimal integer (digits only)")
    refused(parse "0 32768 raid raid1 1 0 2 - 7:1 - 7:3 extra", "has 1 word more than raid takes")
    refused(parse "0 32768 raid raid1 3 0 nosync nosync 2 - 7:1 - 7:3", "option 'nosync' is given twice")
    refused(parse "0 32768 raid raid1 5 0 write_mostly 1 write_mostly 1 3 - 7:1 - 7:3 - 7:5",
            "option 'write_mostly' is given twice for index 1")
    refused(parse "0 65536 raid raid5_ls 5 64 journal_mode writeback journal_dev 7:7 3 - 7:1 - 7:3 - 7:5",
            "option 'journal_mode' must come after option 'journal_dev'")
    refused(parse "0 32768 raid raid10 4 64 raid10_format far raid10_use_near_sets 2 7:0 7:1 7:2 7:3",
            "option 'raid10_use_near_sets' is not supported")
  end)

  it("parses the status line: health per device, sync progress, action, mismatches", function()
    local st = require("devmapper.target").status("raid", "raid1 3 AaD 2048/32768 recover 0 0 -")
    assert.same({"alive", "syncing", "dead"}, st.health)
    assert.same({current = 2048, total = 32768, fraction = 2048 / 32768}, st.sync)
    assert.equal("recover", st.action)
    assert.equal(0, st.mismatches)
    assert.equal("none", st.journal)
    assert.is_true(st.dead)
    assert.is_false(st.in_sync)
    st = require("devmapper.target").status("raid", "raid5_ls 3 AAA 16384/16384 idle 12 0 A")
    assert.is_true(st.in_sync)
    assert.is_false(st.degraded)
    assert.equal(12, st.mismatches)
    assert.equal("alive", st.journal)
    st = require("devmapper.target").status("raid", "raid1 2 -A 16384/16384 idle 0 0 -")
    assert.same({"missing", "alive"}, st.health)
    assert.is_true(st.degraded)
    assert.is_false(st.dead)
    -- sync numbers past an integer's range (the fuzzer's find): no progress, no raw error
    st = require("devmapper.target").status("raid", "raid1 2 AA 5/692233720368547758084 idle 0 0 -")
    assert.is_nil(st.sync)
    assert.is_false(st.in_sync)
  end)

  it("compares a stripe_cache the kernel kept larger as the same table", function()
    local same = require("devmapper.table").same_targets
    local function t(sc) return {{start = 0, length = 8, type = "raid", params = ("raid5_ls 3 64 stripe_cache %d 3 - 7:1 - 7:3 - 7:5"):format(sc)}} end
    assert.is_true(same(t(64), t(72)))
    assert.is_false(same(t(64), t(32)))
    assert.is_false(same(t(64), {{start = 0, length = 8, type = "raid", params = "raid5_ls 3 128 stripe_cache 72 3 - 7:1 - 7:3 - 7:5"}}))
  end)
end)

describe("raid #kernel", function()
  local function status(dev) return dev:status()[1].status end

  -- poll the status until pred holds (bounded: an 8 MiB set syncs in well under a second)
  local function wait(dev, pred, what, seconds)
    local deadline = core.monotonic() + (seconds or 30)
    local st = status(dev)
    while not pred(st) do
      assert.is_true(core.monotonic() < deadline, ("%s: %s did not happen in time (%s)"):format(dev.name, what,
                     dev:status()[1].params))
      os.execute("sleep 0.1")
      st = status(dev)
    end
    return st
  end
  local function synced(st) return st.in_sync end
  local function idle(st) return st.action == "idle" end

  -- through the set, past its page cache
  local function roundtrip(dev, offset, data)
    support.write(dev.path, offset, data)
    support.sh("blockdev --flushbufs " .. dev.path)
    assert.equal(data, support.read(dev.path, offset, #data))
  end

  it("raid1 over two loops with metadata devices: synced, data on both legs, check, a leg failed, re-apply", function()
    local m1, m2 = support.loops(2, "1MiB")
    local d1, d2 = support.loops(2, "8MiB")
    local function def(leg1)
      return dm.stack {prefix = "sprd", leg0 = dm.linear(d1), leg1 = leg1,
                       r = dm.raid {type = "raid1", region_size = 1024,
                                    devices = {{metadata = m1, data = "leg0"}, {metadata = m2, data = "leg1"}}}}
    end
    local s = def(dm.linear(d2))
    support.defer(function() pcall(s.teardown, s) end)
    s:apply()
    local r = s:device("r")
    assert.equal(16384, r:sectors())
    assert.equal(("0 16384 raid raid1 3 0 region_size 1024 2 %s %s %s %s"):format(m1:devno(), s:device("leg0"):devno(),
                 m2:devno(), s:device("leg1"):devno()), support.dmsetup("table sprd-r"))
    local st = wait(r, synced, "the first sync")
    assert.same({"alive", "alive"}, st.health)
    assert.same({current = 16384, total = 16384, fraction = 1.0}, st.sync)
    local data = ("mirror "):rep(1000)
    roundtrip(r, 65536, data)
    -- each leg holds the data (no data offset: the metadata is on its own device); past
    -- the legs' page cache, which udev's probe may have filled before the write
    support.sh(("blockdev --flushbufs %s %s"):format(d1.path, d2.path))
    assert.equal(data, support.read(d1.path, 65536, #data))
    assert.equal(data, support.read(d2.path, 65536, #data))
    -- the check action, then its mismatch count
    r:check()
    st = wait(r, idle, "the check")
    assert.equal(0, st.mismatches)
    refused(function() r:check("now") end, "takes no arguments")
    refused(function() r:reshape() end, "is not a message the kernel takes")
    local ok, err = pcall(r.message, r, "reshape") -- as the kernel answers it
    assert.is_false(ok)
    assert.equal(22, err.errno)
    refused(function() s:device("leg0"):check() end, "is not a message of its targets (linear)")
    -- a second apply changes nothing
    local n = support.changing()
    s:apply()
    assert.equal(0, support.changing() - n)
    -- the second leg's device becomes an error target: md fails it on the next write
    s = def(dm.error(16384))
    assert.same({"keep", "reload", "keep"}, {s:plan()[1].op, s:plan()[2].op, s:plan()[3].op})
    s:apply()
    support.write(r.path, 0, ("after "):rep(100))
    st = wait(r, function(x) return x.dead end, "the failure")
    assert.same({"alive", "dead"}, st.health)
    assert.equal("AD", st.health_chars)
    roundtrip(r, 131072, data) -- degraded, still in service
    n = support.changing()
    s:apply()
    assert.equal(0, support.changing() - n)
    s:teardown()
    assert.same({}, support.names())
  end)

  it("raid1 without a first sync: check counts the legs' differences, repair mends them", function()
    local d1, d2 = support.loops(2, "8MiB")
    support.write(d1.path, 0, ("x"):rep(65536)) -- the legs differ before the set exists
    local s = dm.stack {prefix = "sprm", r = dm.raid {type = "raid1", nosync = true, devices = {{data = d1}, {data = d2}}}}
    support.defer(function() pcall(s.teardown, s) end)
    s:apply()
    local r = s:device("r")
    assert.is_true(status(r).in_sync) -- nosync: taken as in sync at once
    r:check()
    local st = wait(r, idle, "the check")
    assert.is_true(st.mismatches > 0, "mismatches " .. tostring(st.mismatches))
    r:repair()
    wait(r, idle, "the repair")
    r:check()
    st = wait(r, idle, "the second check")
    assert.equal(0, st.mismatches)
    support.sh(("blockdev --flushbufs %s %s"):format(d1.path, d2.path))
    assert.equal(support.read(d1.path, 0, 65536), support.read(d2.path, 0, 65536))
    s:teardown()
  end)

  it("raid5 over three loops with metadata devices: data across them, check, a leg failed", function()
    local m1, m2, m3 = support.loops(3, "1MiB")
    local d1, d2, d3 = support.loops(3, "8MiB")
    local function def(leg2)
      return dm.stack {prefix = "spr5", leg0 = dm.linear(d1), leg1 = dm.linear(d2), leg2 = leg2,
                       r = dm.raid {type = "raid5_ls", chunk = 64, nosync = true,
                                    devices = {{metadata = m1, data = "leg0"}, {metadata = m2, data = "leg1"},
                                               {metadata = m3, data = "leg2"}}}}
    end
    local s = def(dm.linear(d3))
    support.defer(function() pcall(s.teardown, s) end)
    s:apply()
    local r = s:device("r")
    assert.equal(32768, r:sectors()) -- two data devices' worth
    local st = wait(r, synced, "in sync")
    assert.same({"alive", "alive", "alive"}, st.health)
    local data = ("parity "):rep(20000) -- across several chunks and every device
    roundtrip(r, 0, data)
    r:check()
    st = wait(r, idle, "the check")
    assert.equal(0, st.mismatches)
    local n = support.changing()
    s:apply()
    assert.equal(0, support.changing() - n)
    s = def(dm.error(16384))
    s:apply()
    support.write(r.path, 0, ("after "):rep(100))
    st = wait(r, function(x) return x.dead end, "the failure")
    assert.same({"alive", "alive", "dead"}, st.health)
    -- the data is still there, rebuilt from parity
    support.sh("blockdev --flushbufs " .. r.path)
    assert.equal(data:sub(601), support.read(r.path, 600, #data - 600))
    refused(function() dm.create("spr5-x", dm.raid {type = "raid5_ls", chunk = 64, devices = {{data = d1}}}) end,
            "field 'raid_devs' raid5_ls needs more than 1 device")
    s:teardown()
    assert.same({}, support.names())
  end)
end)
