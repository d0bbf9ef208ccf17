-- The fault and tracking targets: delay, flakey, unstriped, log-writes and
-- era. Builders, text and the kernel's rules without a kernel; on the
-- kernel, data through each, each doing what it is for (delaying, failing,
-- losing writes, picking a stripe, logging, counting eras), and each as a
-- member of a stack that applies, re-applies as a no-op and tears down.
local dm = require "devmapper"
local core = require "devmapper.core"
local support = require "spec.support"
local refused, changing = support.refused, support.changing
after_each(support.cleanup)

local function text(x) return support.text(x) end
local function parse(t) return dm.table.parse(t) end

describe("fault targets", function()
  it("build from named fields and print as the kernel does", function()
    assert.equal("0 8 delay 7:0 0 100", text(dm.delay {"7:0", delay = 100, length = 8}))
    assert.equal("0 8 delay 7:0 0 0 7:1 16 500", text(dm.delay {"7:0", delay = 0, write = {"7:1", offset = 16, delay = 500}, length = 8}))
    assert.equal("0 8 delay 7:0 0 0 7:0 0 0 7:1 0 5", text(dm.delay {"7:0", delay = 0, flush = {"7:1", delay = 5}, length = 8}))
    assert.equal("0 8 delay 7:0 0 1 7:1 0 2 7:2 0 3",
                 text(dm.delay {"7:0", delay = 1, write = {dev = "7:1", delay = 2}, flush = {"7:2", delay = 3}, length = 8}))
    assert.equal("0 8 flakey 7:0 0 1 2 0", text(dm.flakey {"7:0", up = 1, down = 2, length = 8}))
    assert.equal("0 8 flakey 7:0 8 0 5 6 drop_writes corrupt_bio_byte 32 r 255 0",
                 text(dm.flakey {"7:0", offset = 8, up = 0, down = 5, length = 8,
                                 features = {"drop_writes", corrupt_bio_byte = {32, "read", 255}}}))
    assert.equal("0 8 flakey 7:0 0 1 1 5 corrupt_bio_byte 1 w 0 7",
                 text(dm.flakey {"7:0", up = 1, down = 1, length = 8,
                                 features = {corrupt_bio_byte = {byte = 1, direction = "w", value = 0, flags = 7}}}))
    assert.equal("0 32 unstriped 2 16 1 7:0 0", text(dm.unstriped {"7:0", stripes = 2, chunk = 16, stripe = 1, length = 32}))
    assert.equal("0 8 log-writes 7:0 7:1", text(dm.log_writes {"7:0", log = "7:1", length = 8}))
    assert.equal("0 8 era 7:0 7:1 128", text(dm.era {metadata = "7:0", origin = "7:1", block_size = "64KiB", length = 8}))
  end)

  it("parse and print back exactly what dmsetup prints", function()
    for _, t in ipairs {
      "0 4096 delay 7:0 0 10", "0 4096 delay 7:0 0 10 7:1 0 20", "0 4096 delay 7:0 0 10 7:1 0 20 7:2 8 30",
      "0 4096 flakey 7:0 0 1 1 0", "0 4096 flakey 7:0 0 1 1 1 error_writes",
      "0 4096 flakey 7:0 0 1 1 6 drop_writes corrupt_bio_byte 32 r 1 0",
      "0 2048 unstriped 2 16 0 7:0 0", "0 4096 log-writes 7:0 7:1", "0 4096 era 7:0 7:1 1024",
    } do
      assert.equal(t, text(parse(t)))
    end
    -- what the kernel normalises, the module does the same way
    assert.equal("0 4096 flakey 7:0 0 1 1 0", text(parse("0 4096 flakey 7:0 0 1 1")))
    assert.equal("0 4096 flakey 7:0 0 1 1 6 error_writes corrupt_bio_byte 32 r 1 0",
                 text(parse("0 4096 flakey 7:0 0 1 1 6 CORRUPT_BIO_BYTE 32 R 1 0 Error_Writes")))
    local d = parse("0 4096 delay 7:0 0 10 7:1 8 20")[1]
    assert.same({"7:0", 0, 10, "7:1", 8, 20}, {d.dev, d.offset, d.delay, d.write_dev, d.write_offset, d.write_delay})
    local f = parse("0 4096 flakey 7:0 0 3 4 5 corrupt_bio_byte 9 w 7 0")[1]
    assert.same({byte = 9, direction = "w", value = 7, flags = 0}, f.features.corrupt_bio_byte)
    assert.equal(3, f.up)
    assert.equal(4, f.down)
  end)

  it("refuse what the kernel's constructors refuse, naming the field and the rule", function()
    refused(function() parse("0 8 delay 7:0 0 10 7:1") end, "has 4 words: delay takes exactly 3, 6 or 9")
    refused(function() parse("0 8 delay 7:0 0 10 7:1 0 20 7:2 0 30 x") end, "has 10 words")
    refused(function() parse("0 8 delay 7:0 0 -1") end, "field 'delay' must be a decimal integer")
    refused(function() parse("0 8 delay 7:0 0 4294967296") end, "field 'delay' must be at most 4294967295")
    refused(function() dm.delay {"7:0", delay = 1, write = {"7:1"}} end, "field 'write.delay' is required")
    refused(function() dm.delay {"7:0", delay = 1, write = {"7:1", delay = 1, speed = 2}} end, "has no field 'speed'")
    refused(function() dm.delay {"7:0", delay = 1, write = {"7:1", delay = 1}, write_delay = 3} end, "is given twice")
    refused(function() parse("0 8 flakey 7:0 0 1") end, "field 'down' is missing")
    refused(function() parse("0 8 flakey 7:0 0 +1 1") end, "field 'up' must be a decimal integer (digits only)")
    refused(function() parse("0 8 flakey 7:0 0 1 1 7 drop_writes a b c d e f") end, "count must be at most 6")
    refused(function() parse("0 8 flakey 7:0 0 1 1 1 error_reads") end, "unknown option 'error_reads'")
    refused(function() parse("0 8 flakey 7:0 0 1 1 2 drop_writes drop_writes") end, "option 'drop_writes' is given twice")
    refused(function() parse("0 8 flakey 7:0 0 1 1 4 corrupt_bio_byte 1 r 1") end, "needs 4 words after it")
    refused(function() parse("0 8 flakey 7:0 0 1 1 5 corrupt_bio_byte 1 x 1 0") end, "direction must be r or w")
    refused(function() parse("0 8 flakey 7:0 0 1 1 5 corrupt_bio_byte 0 r 1 0") end, "byte must be at least 1")
    refused(function() parse("0 8 flakey 7:0 0 1 1 5 corrupt_bio_byte 1 r 256 0") end, "value must be at most 255")
    refused(function() dm.flakey {"7:0", up = 1, down = 1, features = {corrupt_bio_byte = {1, "sideways", 1}}} end,
            "direction must be \"r\" or \"w\"")
    refused(function() dm.flakey {"7:0", up = 1, features = {}} end, "field 'down' is required")
    refused(function() parse("0 8 unstriped 2 16 0 7:0") end, "field 'offset' is missing")
    refused(function() parse("0 8 unstriped 2 16 0 7:0 0 x") end, "has 1 word more than unstriped takes")
    refused(function() parse("0 8 unstriped 0 16 0 7:0 0") end, "field 'stripes' must be at least 1")
    refused(function() parse("0 8 log-writes 7:0") end, "field 'log' is missing")
    refused(function() parse("0 8 era 7:0 7:1") end, "field 'block_size' is missing")
    refused(function() parse("0 8 era 7:0 7:1 4") end, "field 'block_size' must be at least 8")
    refused(function() dm.era {metadata = "7:0", origin = "7:1", block_size = 8, reuse = "yes"} end, "must be true or false")
  end)

  it("check the rules that tie fields together before the kernel sees them", function()
    local devs = {}
    for i, n in ipairs {4096, 4096, 4096, 128} do
      devs["7:" .. (i - 1)] = {major = 7, minor = i - 1, sectors = n, logical_block_size = 512, path = "/dev/loop" .. (i - 1)}
    end
    local ctx = {facts = function(d) return devs[d] end, dev = function(d) return d end, name = function(d) return devs[d].path end}
    local function check(t) return function() parse(t):validate(ctx) end end
    refused(check "0 8 flakey 7:0 0 0 0 0", "field 'down' and field 'up' are both 0")
    refused(check "0 8 flakey 7:0 0 4294967295 1 0", "add up to more than 2^32-1")
    refused(check "0 8 flakey 7:0 0 1 1 2 drop_writes error_writes", "drop_writes or error_writes, not both")
    refused(check "0 8 flakey 7:0 0 1 1 6 error_writes corrupt_bio_byte 1 w 1 0", "can not go with corrupt_bio_byte on writes")
    refused(check "0 4096 delay 7:0 0 1 7:3 0 1", "run past the end of /dev/loop3")
    refused(check "0 2048 unstriped 2 16 2 7:0 0", "field 'stripe' 2 must be below the number of stripes (2)")
    refused(check "0 4096 unstriped 2 16 0 7:0 0", "past the end of /dev/loop0")
    refused(check "0 2040 unstriped 2 16 0 7:0 0", "must be divisible by chunk (16)")
    refused(check "0 4096 log-writes 7:0 7:0", "field 'log' must not be the device it logs")
    refused(check "0 4096 era 7:0 7:0 8", "field 'metadata' must not be the origin")
    refused(check "0 4096 era 7:0 7:1 12", "12 must be a multiple of 8 sectors")
    refused(check "0 8192 era 7:0 7:1 8", "must fit in the device")
    -- lengths the module computes: every whole row for unstriped, the smallest area for delay
    assert.equal("0 2048 unstriped 2 16 1 7:0 0", parse("0 2048 unstriped 2 16 1 7:0 0"):text(ctx))
    assert.equal("0 2048 unstriped 2 16 1 7:0 0", dm.table {dm.unstriped {"7:0", stripes = 2, chunk = 16, stripe = 1}}:text(ctx))
    assert.equal("0 4080 delay 7:0 0 0 7:1 16 9", dm.table {dm.delay {"7:0", delay = 0, write = {"7:1", offset = 16, delay = 9}}}:text(ctx))
  end)

  it("parse their status lines", function()
    local st = require("devmapper.target").status
    assert.same({reads = 0, writes = 2, flushes = 1}, st("delay", "0 2 1"))
    assert.same({}, st("flakey", ""))
    assert.same({}, st("unstriped", ""))
    assert.same({logged_entries = 12, last_sector = 40, logging = true}, st("log-writes", "12 40"))
    assert.same({logged_entries = 3, last_sector = 9, logging = false}, st("log-writes", "3 9 logging_disabled"))
    assert.same({metadata_block_sectors = 8, metadata_used = 96, metadata_total = 4096, era = 3},
                st("era", "8 96/4096 3 -"))
    assert.equal(17, st("era", "8 96/4096 3 17").held_root)
  end)

  it("zero an era's metadata superblock before create, unless told to reuse it (dry run)", function()
    local out = support.dry(function()
      local l1, l2 = dm.loop.create("/tmp/dry-era1", "2MiB"), dm.loop.create("/tmp/dry-era2", "1MiB")
      dm.create("dry-era", dm.era {metadata = l2, origin = l1, block_size = 8}):remove()
      dm.create("dry-era", dm.era {metadata = l2, origin = l1, block_size = 8, reuse = true}):remove()
    end)
    local _, n = out:gsub("dd if=/dev/zero of='?/dev/loop%d+%??'? bs=512 count=8 conv=notrunc\n", "")
    assert.equal(1, n, out)
    assert.matches("dmsetup create dry%-era %-%-table '0 4096 era 7:%d+ 7:%d+ 8'", out)
  end)
end)

-- Direct I/O with dd, past every page cache: (output, exit status).
local function dd_read(path, sector, count)
  local out, code = support.sh(("dd if=%s bs=512 skip=%d count=%d iflag=direct status=none"):format(path, sector, count or 1))
  return out, code
end

-- conv = "notrunc,fsync" adds a flush after the data
local function dd_write(path, sector, byte, count, conv)
  return support.sh(("head -c %d /dev/zero | tr '\\0' '%s' | dd of=%s bs=512 seek=%d oflag=direct conv=%s status=none")
                    :format(512 * (count or 1), byte, path, sector, conv or "notrunc"))
end

describe("fault targets #kernel", function()
  it("delay: data written and read back; writes held back for their delay; reconfigured in place", function()
    local l1 = support.loops(1)
    local dev = support.device("spec-delay", dm.delay {l1, delay = 0, write = {l1, delay = 400}})
    assert.equal(("0 4096 delay %s 0 0 %s 0 400"):format(l1:devno(), l1:devno()), support.dmsetup("table spec-delay"))
    local t0 = core.monotonic()
    local _, code = dd_write(dev.path, 8, "d", 4)
    local took = core.monotonic() - t0
    assert.equal(0, code)
    assert.is_true(took >= 0.3, ("a write held back 400 ms took %.3f s"):format(took))
    t0 = core.monotonic()
    assert.equal(("d"):rep(2048), (dd_read(dev.path, 8, 4)))
    assert.equal(("d"):rep(2048), (dd_read(l1.path, 8, 4)))
    assert.same({reads = 0, writes = 0, flushes = 0}, dev:status()[1].status)
    -- no message in the kernel: a reload with the changed fields
    dev:reconfigure {write = {l1, delay = 0}, delay = 5}
    assert.equal(("0 4096 delay %s 0 5 %s 0 0"):format(l1:devno(), l1:devno()), support.dmsetup("table spec-delay"))
    assert.is_false(dev:info().suspended)
    t0 = core.monotonic()
    _, code = dd_write(dev.path, 16, "e", 4)
    assert.equal(0, code)
    assert.is_true(core.monotonic() - t0 < 5, "an undelayed write is not held back for long")
    assert.equal(("e"):rep(2048), (dd_read(l1.path, 16, 4)))
    dev:remove()
  end)

  it("flakey: I/O fails while it is down, works while it is up; drop_writes loses writes, error_writes fails them", function()
    local l1 = support.loops(1)
    dd_write(l1.path, 0, "a", 8)
    -- always down (up 0): every I/O fails
    local dev = support.device("spec-flakey", dm.flakey {l1, up = 0, down = 3600})
    assert.equal(("0 4096 flakey %s 0 0 3600 0"):format(l1:devno()), support.dmsetup("table spec-flakey"))
    local _, code = dd_read(dev.path, 0)
    assert.not_equal(0, code, "a read while down fails")
    _, code = dd_write(dev.path, 0, "b")
    assert.not_equal(0, code, "a write while down fails")
    assert.same({}, dev:status()[1].status)
    -- always up: data goes through
    dev:reconfigure {up = 3600, down = 0}
    assert.equal(("0 4096 flakey %s 0 3600 0 0"):format(l1:devno()), support.dmsetup("table spec-flakey"))
    _, code = dd_write(dev.path, 1, "c")
    assert.equal(0, code)
    assert.equal(("c"):rep(512), (dd_read(dev.path, 1)))
    assert.equal(("c"):rep(512), (dd_read(l1.path, 1)))
    -- down with drop_writes: the write is acknowledged and lost, reads work
    dev:reconfigure {up = 0, down = 3600, features = {"drop_writes"}}
    _, code = dd_write(dev.path, 2, "x")
    assert.equal(0, code, "a dropped write reports success")
    assert.equal(("a"):rep(512), (dd_read(l1.path, 2)), "and never reached the device")
    assert.equal(("a"):rep(512), (dd_read(dev.path, 2)))
    -- down with error_writes: the write fails, reads work
    dev:reconfigure {features = {"error_writes"}}
    assert.equal(("0 4096 flakey %s 0 0 3600 1 error_writes"):format(l1:devno()), support.dmsetup("table spec-flakey"))
    _, code = dd_write(dev.path, 3, "y")
    assert.not_equal(0, code)
    assert.equal(("a"):rep(512), (dd_read(dev.path, 3)))
    -- down with corrupt_bio_byte on writes: byte 1 of every write is replaced (6.1
    -- corrupts no read: its end_io walks a bio iterator already at the end)
    dev:reconfigure {features = {corrupt_bio_byte = {1, "w", 0x5a}}}
    _, code = dd_write(dev.path, 4, "b")
    assert.equal(0, code)
    assert.equal("Z" .. ("b"):rep(511), (dd_read(l1.path, 4)))
    assert.is_false(dev:info().suspended)
    dev:remove()
  end)

  it("unstriped: reads back one stripe of a striped device", function()
    local l1, l2 = support.loops(2)
    dd_write(l1.path, 0, "1", 64)
    dd_write(l2.path, 0, "2", 64)
    local st = support.device("spec-striped", dm.striped {chunk = 16, l1, l2})
    local one = support.device("spec-uns1", dm.unstriped {st, stripes = 2, chunk = 16, stripe = 1})
    local zero = support.device("spec-uns0", dm.unstriped {st, stripes = 2, chunk = 16, stripe = 0})
    assert.equal(("0 4096 unstriped 2 16 1 %s 0"):format(st:devno()), support.dmsetup("table spec-uns1"))
    -- each stripe is one of the striped device's devices, chunk for chunk
    assert.equal(("2"):rep(512 * 64), (dd_read(one.path, 0, 64)))
    assert.equal(("1"):rep(512 * 64), (dd_read(zero.path, 0, 64)))
    -- written through the stripe, it lands on that device
    local _, code = dd_write(one.path, 100, "u")
    assert.equal(0, code)
    assert.equal(("u"):rep(512), (dd_read(l2.path, 100)))
    assert.same({}, one:status()[1].status)
    zero:remove()
    one:remove()
    st:remove()
  end)

  it("log-writes: logs the writes, accepts a mark, reports what it logged", function()
    local l1, l2 = support.loops(2)
    local dev = support.device("spec-logw", dm.log_writes {l1, log = l2})
    assert.equal(("0 4096 log-writes %s %s"):format(l1:devno(), l2:devno()), support.dmsetup("table spec-logw"))
    local before = dev:status()[1].status
    assert.is_true(before.logging)
    -- writes are logged when a flush comes (the kernel holds them until then)
    local _, code = dd_write(dev.path, 8, "w", 4, "notrunc,fsync")
    assert.equal(0, code)
    assert.equal(("w"):rep(2048), (dd_read(l1.path, 8, 4)))
    local function logged(n)
      local st
      for _ = 1, 100 do
        st = dev:status()[1].status
        if st.logged_entries >= n then break end
        core.sleep(0.05)
      end
      return st
    end
    local written = logged(before.logged_entries + 1)
    assert.is_true(written.logged_entries > before.logged_entries, "the write is logged")
    dev:mark("after-data")
    refused(function() dev:mark("two words") end, "the mark must be one word")
    refused(function() dev:mark(("m"):rep(480)) end, "the kernel keeps at most 479")
    local st = logged(written.logged_entries + 1)
    assert.is_true(st.logged_entries > written.logged_entries, "the mark is logged")
    assert.is_true(st.last_sector > written.last_sector)
    -- the mark's name is in the log
    local found
    for _ = 1, 100 do
      found = (dd_read(l2.path, 0, 64)):find("after-data", 1, true)
      if found then break end
      core.sleep(0.05)
    end
    assert.truthy(found, "the mark's name is on the log device")
    -- the log's superblock (written with the mark): its magic
    assert.equal("rhswfsj\0", (dd_read(l2.path, 0)):sub(1, 8))
    dev:remove()
  end)

  it("era: data through it, eras advanced by checkpoint, a metadata snapshot held and dropped", function()
    local l1, l2 = support.loops(2)
    local dev = support.device("spec-era", dm.era {metadata = l2, origin = l1, block_size = 8})
    assert.equal(("0 4096 era %s %s 8"):format(l2:devno(), l1:devno()), support.dmsetup("table spec-era"))
    local _, code = dd_write(dev.path, 0, "e", 16)
    assert.equal(0, code)
    assert.equal(("e"):rep(512 * 16), (dd_read(l1.path, 0, 16)))
    local st = dev:status()[1].status
    assert.equal(8, st.metadata_block_sectors)
    assert.is_true(st.metadata_used > 0 and st.metadata_used <= st.metadata_total)
    assert.is_nil(st.held_root)
    dev:checkpoint()
    assert.equal(st.era + 1, dev:status()[1].status.era)
    dev:take_metadata_snap()
    assert.is_true(dev:status()[1].status.held_root > 0)
    dev:drop_metadata_snap()
    assert.is_nil(dev:status()[1].status.held_root)
    dev:remove()
    -- the store is kept with reuse: its eras go on
    dev = support.device("spec-era", dm.era {metadata = l2, origin = l1, block_size = 8, reuse = true})
    assert.is_true(dev:status()[1].status.era >= st.era + 1)
    dev:remove()
  end)

  it("each is a stack member: apply, a second apply changes nothing, teardown leaves nothing", function()
    local l1, l2, l3, l4, l5 = support.loops(5)
    local function def()
      return dm.stack {
        prefix = "spft",
        base = dm.linear(l1),
        slow = dm.delay {"base", delay = 0, write = {"base", delay = 1}},
        flaky = dm.flakey {"slow", up = 3600, down = 0, features = {"error_writes"}},
        era = dm.era {metadata = l2, origin = "flaky", block_size = 8},
        logged = dm.log_writes {"era", log = l3},
        st = dm.striped {chunk = 16, l4, l5},
        half = dm.unstriped {"st", stripes = 2, chunk = 16, stripe = 1},
      }
    end
    local s = def()
    support.defer(function() pcall(s.teardown, s) end)
    s:apply()
    assert.same({"spft-base", "spft-era", "spft-flaky", "spft-half", "spft-logged", "spft-slow", "spft-st"}, support.names())
    assert.equal(("0 4096 flakey %s 0 3600 0 1 error_writes"):format(s:device("slow"):devno()), support.dmsetup("table spft-flaky"))
    local logged = s:device("logged")
    local _, code = dd_write(logged.path, 0, "s", 8)
    assert.equal(0, code)
    assert.equal(("s"):rep(512 * 8), (dd_read(l1.path, 0, 8)))
    local n = changing()
    s = def()
    s:apply()
    assert.equal(0, changing() - n, "a second apply makes no state-changing ioctl")
    for _, p in ipairs(s:plan()) do assert.equal("keep", p.op, p.member) end
    s:teardown()
    assert.same({}, support.names())
  end)
end)
