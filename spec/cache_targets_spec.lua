-- cache (smq), writecache and integrity: builders, text, checks and status
-- without a kernel; then data, status, messages and stacks on the real one.
local dm = require "devmapper"
local sleep = require("devmapper.core").sleep
local support = require "spec.support"
local refused = support.refused
after_each(support.cleanup)

-- A resolution context with made-up block devices, for checks without a kernel.
local function fake(devs)
  return {
    facts = function(d) return devs[type(d) == "table" and d.path or d] end,
    dev = function(d) return d end,
    name = function(d) return "/dev/" .. d end,
  }
end

local DEVS = {
  ["7:0"] = {major = 7, minor = 0, sectors = 4096, logical_block_size = 512},
  ["7:1"] = {major = 7, minor = 1, sectors = 16384, logical_block_size = 512},
  ["7:2"] = {major = 7, minor = 2, sectors = 65536, logical_block_size = 512},
  ["7:3"] = {major = 7, minor = 3, sectors = 4096, logical_block_size = 4096},
}

local function text(seg) return tostring(dm.table {seg}) end
local function validate(seg) return dm.table {seg}:validate(fake(DEVS)) end

describe("cache targets", function()
  it("build cache segments with named fields, as the kernel prints them", function()
    assert.equal("0 65536 cache 7:0 7:1 7:2 128 1 writethrough smq 2 migration_threshold 2048",
                 text(dm.cache {metadata = "7:0", cache = "7:1", origin = "7:2", block = "64KiB", mode = "writethrough",
                                policy_args = {migration_threshold = 2048}, length = 65536}))
    assert.equal("0 8 cache 7:0 7:1 7:2 64 2 metadata2 passthrough cleaner 0",
                 text(dm.cache {metadata = "7:0", cache = "7:1", origin = "7:2", block = 64, mode = "passthrough",
                                features = {"metadata2"}, policy = "cleaner", length = 8}))
    assert.equal("0 8 cache 7:0 7:1 7:2 64 0 smq 0",
                 text(dm.cache {metadata = "7:0", cache = "7:1", origin = "7:2", block = 64, length = 8}))
    -- text keeps its words as written: the kernel prints them back so
    for _, t in ipairs {"0 8 cache 7:0 7:1 7:2 64 2 WRITEBACK Metadata2 smq 2 MIGRATION_THRESHOLD +5",
                        "0 8 cache 7:0 7:1 7:2 192 1 no_discard_passdown mq 2 random_threshold 4"} do
      assert.equal(t, tostring(dm.table.parse(t)))
    end
  end)

  it("refuse cache tables the kernel refuses, naming the field and the rule", function()
    local function c(f)
      local base = {metadata = "7:0", cache = "7:1", origin = "7:2", block = 64}
      for k, v in pairs(f) do base[k] = v end
      return dm.cache(base)
    end
    refused(function() validate(c {block = 96}) end, "field 'block' 96 must be a multiple of 64 sectors (32 KiB)")
    refused(function() c {block = 32} end, "field 'block' must be at least 64")
    refused(function() c {block = "2GiB"} end, "field 'block' must be at most 2097152")
    refused(function() validate(c {cache = "7:0", metadata = "7:3", block = 8192}) end, "is larger than the cache device")
    refused(function() c {mode = "writearound"} end, "field 'mode' must be writeback, writethrough or passthrough")
    refused(function() c {mode = "writeback", features = {"writethrough"}} end, "field 'mode' is given twice")
    refused(function() c {features = {"writeback", "writethrough"}} end, "may hold only one of writeback, writethrough")
    refused(function() c {features = {"bogus"}} end, "unknown option 'bogus'")
    refused(function() validate(c {policy_args = {sequential_threshold = 4}}) end,
            "policy smq takes no key 'sequential_threshold'")
    refused(function() c {policy_args = {migration_threshold = -1}} end, "must be an integer >= 0")
    refused(function() validate(c {metadata = "7:1"}) end, "field 'cache' is the same device as field 'metadata'")
    refused(function() dm.table.parse("0 8 cache 7:0 7:1 7:2 64 1 writethrough smq 1 migration_threshold") end,
            "must be <key> <value> pairs")
    refused(function() dm.table.parse("0 8 cache 7:0 7:1 7:2 064 1 writethrough smq 0") end, "plain decimal")
    refused(function() dm.table.parse("0 8 cache 7:0 7:1 7:2 64 1 writethrough smq 0 extra") end, "the kernel would ignore it")
    refused(function() dm.table.parse("0 8 cache 7:0 7:1 7:2 64 4 a b c d smq 0") end, "count must be at most 3")
    validate(c {mode = "writeback", policy = "mq", policy_args = {random_threshold = 4}})
    validate(c {policy = "someday", policy_args = {anything = 1}})   -- a policy only the kernel knows
  end)

  it("build writecache segments: options as word pairs, in the kernel's order", function()
    assert.equal("0 8 writecache s 7:2 7:1 4096 4 high_watermark 60 low_watermark 10",
                 text(dm.writecache {cache = "7:1", origin = "7:2", options = {low_watermark = 10, high_watermark = 60},
                                     length = 8}))
    assert.equal("0 8 writecache s 7:2 7:1 512 3 autocommit_time 1000 cleaner",
                 text(dm.writecache {cache = "7:1", origin = "7:2", persistent = false, block = 512,
                                     options = {"cleaner", autocommit_time = 1000}, length = 8}))
    assert.equal("0 8 writecache s 7:2 7:1 4096 4 high_watermark 60 low_watermark 10",
                 tostring(dm.table.parse("0 8 writecache S 7:2 7:1 4096 4 LOW_WATERMARK 10 high_watermark 60")))
    local function w(f)
      local base = {cache = "7:1", origin = "7:2"}
      for k, v in pairs(f) do base[k] = v end
      return dm.writecache(base)
    end
    refused(function() w {block = 8192} end, "field 'block' must be at most 4096")
    refused(function() w {block = 1000} end, "must be a power of 2")
    refused(function() validate(w {options = {low_watermark = 60}}) end,
            "high_watermark (50) must be at least low_watermark (60) (the kernel's defaults are 50 and 45)")
    refused(function() w {options = {high_watermark = 101}} end, "must be at most 100")
    refused(function() validate(w {options = {"fua"}}) end, "fua and nofua are for persistent memory (mode p) only")
    refused(function() validate(w {mode = "p", options = {pause_writeback = 10}}) end, "pause_writeback is for mode s only")
    refused(function() validate(w {cache = "7:3", block = 512}) end, "512 is below the logical block size of the cache")
    refused(function() validate(w {options = {start_sector = 16384}}) end, "start_sector 16384 is past the end")
    refused(function() validate(w {options = {start_sector = 16383}}) end, "is too small to hold one 4096-byte block")
    refused(function() w {mode = "p", persistent = true} end, "field 'mode' is given twice")
    refused(function() dm.table.parse("0 8 writecache s 7:2 7:1 4096 1 high_watermark:60") end, "takes its value as the next word")
    refused(function() dm.table.parse("0 8 writecache s 7:2 7:1 4096 1 high_watermark") end, "needs 1 word after it")
  end)

  it("build integrity segments: name:value options; format only when asked", function()
    assert.equal("0 1024 integrity 7:1 0 4 J 1 internal_hash:crc32c",
                 text(dm.integrity {"7:1", tag_size = 4, options = {internal_hash = "crc32c"}, length = 1024}))
    assert.equal("0 1024 integrity 7:1 8 - B 3 allow_discards sectors_per_bit:64 internal_hash:sha256",
                 text(dm.integrity {"7:1", offset = 8, mode = "B", length = 1024,
                                    options = {"allow_discards", internal_hash = "sha256", sectors_per_bit = 64}}))
    local function i(f)
      local base = {"7:1", tag_size = 4, length = 1024}
      for k, v in pairs(f) do base[k] = v end
      return dm.integrity(base)
    end
    refused(function() validate(i {tag_size = "-"}) end, "needs options.internal_hash")
    refused(function() validate(i {mode = "B"}) end, "B (bitmap) needs options.internal_hash")
    refused(function() validate(i {options = {"allow_discards"}}) end, "allow_discards needs internal_hash")
    refused(function() validate(i {options = {"recalculate"}}) end, "recalculate needs internal_hash")
    refused(function() i {mode = "j"} end, "must be J (journal), B (bitmap), D (direct) or R (recovery)")
    refused(function() i {tag_size = 256} end, "must be at most 255")
    refused(function() i {tag_size = 0} end, "must be at least 1")
    refused(function() i {options = {block_size = 1000}} end, "must be a power of 2")
    refused(function() i {options = {internal_hash = "hmac(sha256):00ff"}} end, "keyed hashes are not supported yet")
    refused(function() i {options = {"Allow_discards"}} end, "unknown option 'Allow_discards'")
    refused(function() i {format = "yes"} end, "field 'format' must be true or false")
    refused(function() validate(i {offset = 16380}) end, "leaves no room for the superblock")
    refused(function() dm.table.parse("0 8 integrity 7:1 0 4 J") end, "is missing its count")
    -- zeroing is planned only for a segment built with format = true
    local seg = i {format = true}
    assert.equal("dd if=/dev/zero of=/dev/7:1 bs=512 seek=0 count=8 conv=notrunc", seg:before_create(fake(DEVS), true))
    assert.is_nil(i {}:before_create(fake(DEVS), true))
    assert.is_nil(dm.table.parse("0 8 integrity 7:1 0 4 J 0")[1]:before_create(fake(DEVS), true))
  end)

  it("parse the status lines of 6.1", function()
    local target = require "devmapper.target"
    local c = target.status("cache", "8 27/2048 128 5/64 10 20 3 4 0 5 2 1 writethrough 2 migration_threshold 2048 smq 0 rw - ")
    assert.same({state = "ok", metadata_block = 8, metadata_used = 27, metadata_total = 2048, cache_block = 128,
                 cache_used = 5, cache_total = 64, read_hits = 10, read_misses = 20, write_hits = 3, write_misses = 4,
                 demotions = 0, promotions = 5, dirty = 2, features = {"writethrough"}, mode = "writethrough",
                 core = {migration_threshold = 2048}, migration_threshold = 2048, policy = "smq", policy_args = {},
                 metadata_mode = "rw", read_only = false, needs_check = false}, c)
    local m = target.status("cache", "8 1/2 64 0/4 0 0 0 0 0 0 0 3 metadata2 writeback no_discard_passdown 2 "
                            .. "migration_threshold 100 mq 10 random_threshold 0 sequential_threshold 0 "
                            .. "discard_promote_adjustment 0 read_promote_adjustment 0 write_promote_adjustment 0 ro needs_check")
    assert.equal("writeback", m.mode)
    assert.is_true(m.metadata2 and m.no_discard_passdown and m.read_only and m.needs_check)
    assert.equal(0, m.policy_args.random_threshold)
    assert.same({state = "fail", fail = true}, target.status("cache", "Fail"))
    local w = target.status("writecache", "0 1000 990 2 5 1 10 0 0 0 10 0 1 0")
    assert.same({error = 0, blocks = 1000, free = 990, writeback = 2, reads = 5, read_hits = 1, writes = 10,
                 write_hits_uncommitted = 0, write_hits_committed = 0, writes_around = 0, writes_allocate = 10,
                 writes_blocked_on_freelist = 0, flushes = 1, discards = 0, used = 10}, w)
    assert.same({mismatches = 3, provided_sectors = 3520, recalculating = false},
                target.status("integrity", "3 3520 -"))
    assert.same({mismatches = 0, provided_sectors = 3520, recalculate = 1024, recalculating = true},
                target.status("integrity", "0 3520 1024"))
    assert.same({mismatches = 0, provided_sectors = 3520, recalculate = 3520, recalculating = false},
                target.status("integrity", "0 3520 3520"))
  end)

  it("compare an integrity table with the kernel's, which adds values of its own", function()
    local same = require("devmapper.target").get("integrity").same
    local live = "7:1 0 4 J 6 journal_sectors:176 interleave_sectors:32768 buffer_sectors:128 journal_watermark:50 "
                 .. "commit_time:10000 internal_hash:crc32c"
    assert.is_true(same("7:1 0 4 J 1 internal_hash:crc32c", live))
    assert.is_true(same("7:1 0 - J 1 internal_hash:crc32c", live))
    assert.is_true(same("7:1 0 4 J 2 journal_sectors:64 internal_hash:crc32c", live))
    assert.is_false(same("7:1 0 8 J 1 internal_hash:crc32c", live))
    assert.is_false(same("7:1 0 4 J 1 internal_hash:sha256", live))
    assert.is_false(same("7:1 0 4 J 2 allow_discards internal_hash:crc32c", live))
    assert.is_false(same("7:1 0 4 B 1 internal_hash:crc32c", live))
    assert.is_false(same("7:1 0 4 J 0", live))
  end)
end)

-- n bytes at a byte offset, read with O_DIRECT (past any page cache); nil when the read fails.
local function direct(path, offset, n)
  local bs = 4096
  local p = io.popen(("dd if=%s bs=%d skip=%d count=%d iflag=direct status=none 2>/dev/null; echo \"rc=$?\"")
                     :format(path, bs, offset // bs, (offset % bs + n + bs - 1) // bs))
  local out = p:read("a")
  p:close()
  local data, rc = out:match("^(.*)rc=(%d+)\n$")
  if rc ~= "0" then return nil end
  return data:sub(offset % bs + 1, offset % bs + n)
end

local function pattern(tag, n)
  local t = {}
  for i = 1, n // 32 do t[i] = ("%-31s\n"):format(tag .. " " .. i) end
  return table.concat(t)
end

local function status(dev) return dev:status()[1].status end

describe("cache targets #kernel", function()
  it("cache: data goes through, reads hit once promoted, messages change it, bad ones are refused", function()
    local meta, fast, slow = support.loops(3, "8MiB")
    local seg = dm.cache {metadata = meta, cache = fast, origin = slow, block = "64KiB", mode = "writethrough",
                          policy_args = {migration_threshold = 2048}}
    local dev = support.device("spec-cache", seg)
    assert.equal(support.text(dm.table {seg}), support.dmsetup("table spec-cache"))
    local data = pattern("cache", 1024 * 1024)
    support.write(dev.path, 0, data)
    assert.equal(data, direct(dev.path, 0, #data))
    assert.equal(data:sub(1, 4096), direct(slow.path, 0, 4096))   -- writethrough: on the origin too
    local st = status(dev)
    assert.equal("writethrough", st.mode)
    assert.equal(128, st.cache_block)
    assert.equal(128, st.cache_total)        -- 8 MiB of 64 KiB blocks
    assert.is_true(st.metadata_used > 0 and st.metadata_total >= st.metadata_used)
    assert.equal(2048, st.migration_threshold)
    assert.equal("smq", st.policy)
    assert.is_false(st.needs_check)
    assert.is_false(st.read_only)
    -- the same blocks read again and again: smq promotes them, and reads then hit
    for _ = 1, 50 do
      assert.equal(data:sub(1, 4096), direct(dev.path, 0, 4096))
      direct(dev.path, 0, #data)
      st = status(dev)
      if st.read_hits > 0 then break end
      sleep(0.1)
    end
    assert.is_true(st.promotions > 0, "promotions")
    assert.is_true(st.cache_used > 0, "cache blocks used")
    local hits = st.read_hits
    assert.is_true(hits > 0, "read hits")
    direct(dev.path, 0, #data)
    assert.is_true(status(dev).read_hits > hits, "hits grow")
    -- messages
    dev:migration_threshold(4096)
    assert.equal(4096, status(dev).migration_threshold)
    refused(function() dev:migration_threshold(-1) end, "must be an integer number of sectors >= 0")
    refused(function() dev:migration_threshold(1.5) end, "must be an integer")
    refused(function() dev:invalidate_cblocks() end, "needs at least one block or range")
    refused(function() dev:invalidate_cblocks({5, 2}) end, "argument 1 must be a block")
    assert.is_false(pcall(dev.policy_config, dev, "no_such_key", 1))      -- the kernel's refusal
    assert.is_false(pcall(dev.invalidate_cblocks, dev, 0))                -- only in passthrough mode
    refused(function() dev:flush() end, "is not a message of its targets (cache)")
    dev:remove()
    -- the metadata is kept: the cache comes back with its blocks (same block size)
    dev = support.device("spec-cache", seg)
    assert.is_true(status(dev).cache_used > 0)
    assert.equal(data, direct(dev.path, 0, #data))
    -- passthrough (a clean cache may switch): blocks can be invalidated, in range only
    dev:reload(dm.cache {metadata = meta, cache = fast, origin = slow, block = "64KiB", mode = "passthrough"})
    assert.equal("passthrough", status(dev).mode)
    dev:invalidate_cblocks({0, 128})
    assert.equal(0, status(dev).cache_used)
    assert.is_false(pcall(dev.invalidate_cblocks, dev, 128))              -- past the 128 blocks: the kernel's refusal
    assert.equal(data, direct(dev.path, 0, #data))
    dev:remove()
    -- the kernel's own refusals of a table the module cannot judge
    local ok, err = pcall(dm.create, "spec-cache", dm.cache {metadata = meta, cache = fast, origin = slow, block = 64,
                                                             policy = "nosuch"})
    assert.is_false(ok)
    assert.equal(22, err.errno)
    assert.same({}, support.names())
  end)

  it("cache in front of a crypt device in a stack: apply, apply again, teardown", function()
    local meta, fast, slow = support.loops(3, "8MiB")
    local s = dm.stack {prefix = "spec_cc", secret = dm.crypt {slow, key = dm.key.random(64)},
                        top = dm.cache {metadata = meta, cache = fast, origin = "secret", block = 128, mode = "writeback"}}
    support.defer(function() pcall(dm.cleanup, "spec_cc") end)
    s:apply()
    local top = "/dev/mapper/spec_cc-top"
    local data = pattern("stacked", 256 * 1024)
    support.write(top, 4096, data)
    assert.equal(data, direct(top, 4096, #data))
    assert.not_equal(data:sub(1, 64), direct(slow.path, 4096, 64))       -- encrypted below
    for _, step in ipairs(s:plan()) do assert.equal("keep", step.op, step.name) end
    s:apply()
    assert.equal("writeback", status(dm.device("spec_cc-top")).mode)
    s:teardown()
    assert.same({}, support.names())
    -- applied again over the same devices: the data is there
    s:apply()
    assert.equal(data, direct(top, 4096, #data))
    s:teardown()
    assert.same({}, support.names())
  end)

  it("writecache: writes stay on the cache until flushed, then drain to the origin", function()
    local origin, ssd = support.loops(2, "8MiB")
    local seg = dm.writecache {cache = ssd, origin = origin, options = {high_watermark = 90, low_watermark = 80}}
    local dev = support.device("spec-wc", seg)
    assert.equal(support.text(dm.table {seg}), support.dmsetup("table spec-wc"))
    local st = status(dev)
    assert.equal(0, st.error)
    assert.equal(st.blocks, st.free)
    local data = pattern("writecache", 64 * 1024)
    support.write(dev.path, 8192, data)
    st = status(dev)
    assert.is_true(st.used >= 16, "16 blocks held")
    assert.is_true(st.writes > 0)
    assert.not_equal(data:sub(1, 64), direct(origin.path, 8192, 64))     -- not on the origin yet
    assert.equal(data, direct(dev.path, 8192, #data))
    dev:flush()
    st = status(dev)
    assert.equal(st.blocks, st.free)
    assert.equal(0, st.writeback)
    assert.equal(data, direct(origin.path, 8192, #data))
    dev:clear_stats()
    st = status(dev)
    assert.equal(0, st.writes)
    assert.equal(0, st.reads)
    dev:flush_on_suspend()
    dev:cleaner()
    refused(function() dev:flush(1) end, "takes no arguments (got 1)")
    refused(function() dev:migration_threshold(10) end, "is not a message of its targets (writecache)")
    -- persistent-memory mode on a device without DAX is refused before the kernel
    -- (6.1's constructor would dereference the missing DAX device)
    refused(function() dm.create("spec-wc2", dm.writecache {cache = ssd, origin = origin, persistent = true}) end,
            "has no DAX")
    dev:remove()
    assert.same({}, support.names())
  end)

  it("writecache as a stack member over a linear device: apply, apply again, teardown", function()
    local origin, ssd = support.loops(2, "8MiB")
    local s = dm.stack {prefix = "spec_wc", base = dm.linear(origin),
                        fast = dm.writecache {cache = ssd, origin = "base", block = 4096, options = {"cleaner"}}}
    support.defer(function() pcall(dm.cleanup, "spec_wc") end)
    s:apply()
    local data = pattern("member", 32 * 1024)
    support.write("/dev/mapper/spec_wc-fast", 0, data)
    assert.equal(data, direct("/dev/mapper/spec_wc-fast", 0, #data))
    for _, step in ipairs(s:plan()) do assert.equal("keep", step.op, step.name) end
    s:apply()
    s:teardown()
    assert.same({}, support.names())
    assert.equal(data, direct(origin.path, 0, #data))                    -- cleaner: written back
  end)

  it("integrity: formats a zeroed device, detects corruption below it as an I/O error and a mismatch", function()
    local l = support.loops(1, "8MiB")
    local sb = require("devmapper.target").get("integrity").superblock
    local fields = {l, tag_size = 4, options = {internal_hash = "crc32c"}}
    -- a device that held something else: the kernel refuses it, and nothing is zeroed unless asked
    support.write(l.path, 0, ("x"):rep(4096))
    local ok = pcall(dm.create, "spec-ig", dm.integrity {l, tag_size = 4, options = {internal_hash = "crc32c"}, length = 8})
    assert.is_false(ok)
    assert.equal(("x"):rep(16), support.read(l.path, 0, 16))
    refused(function() dm.table {dm.integrity(fields)}:validate() end, "holds no integrity superblock")
    -- format = true: the first 4 KiB zeroed, the kernel formats the device
    local f = {format = true, length = 8}
    for k, v in pairs(fields) do f[k] = v end
    support.device("spec-ig", dm.integrity(f)):remove()
    local s = sb(l.path, 0)
    assert.truthy(s, "a superblock")
    assert.equal(4, s.tag_size)
    assert.is_true(s.provided_sectors > 8192 and s.provided_sectors < 16384)
    -- its length now comes from the superblock
    local dev = support.device("spec-ig", dm.integrity(fields))
    assert.equal(s.provided_sectors, dev:sectors())
    -- (a fresh format has no tags for sectors never written: udev's probe reading them counts mismatches)
    local st = status(dev)
    assert.equal(s.provided_sectors, st.provided_sectors)
    assert.is_false(st.recalculating)
    local data = pattern("integrity", 8192)
    support.write(dev.path, 1024 * 1024, data)
    assert.equal(data, direct(dev.path, 1024 * 1024, #data))
    assert.is_true(support.text(dev:table()):find(" integrity %d+:%d+ 0 4 J 6 journal_sectors:%d+ ") ~= nil)
    refused(function() dev:flush() end, "is not a message of its targets (integrity)")
    dev:remove()
    -- format = true on a device that is formatted keeps it (and its data)
    dev = support.device("spec-ig", dm.integrity(f))
    dev:remove()
    dev = support.device("spec-ig", dm.integrity(fields))
    assert.equal(data, direct(dev.path, 1024 * 1024, #data))
    dev:remove()
    -- one byte of the data changed below the device: the read fails, the mismatch is counted
    local file = l:info().backing_file
    local h = assert(io.open(file, "r+b"))
    local all = h:read("a")
    local at
    local from = 1
    while true do
      local i = all:find(data:sub(4097, 4160), from, true)   -- the second block of the data
      if not i then break end
      at, from = i, i + 1
    end
    assert.truthy(at, "the data is on the device")
    h:seek("set", at - 1 + 10)
    h:write("#")
    h:close()
    dev = support.device("spec-ig", dm.integrity(fields))
    local before = status(dev).mismatches
    assert.equal(data:sub(1, 4096), direct(dev.path, 1024 * 1024, 4096))  -- the block before is intact
    assert.is_nil(direct(dev.path, 1024 * 1024, #data))
    assert.is_true(status(dev).mismatches > before)
    dev:remove()
    assert.same({}, support.names())
  end)

  it("integrity with recalculate: the kernel computes the tags of a fresh format, then every sector reads", function()
    local l = support.loops(1, "8MiB")
    local fields = {l, tag_size = 4, options = {"recalculate", internal_hash = "crc32c"}}
    local f = {format = true, length = 8}
    for k, v in pairs(fields) do f[k] = v end
    support.device("spec-igr", dm.integrity(f)):remove()
    local dev = support.device("spec-igr", dm.integrity(fields))
    local st
    for _ = 1, 100 do
      st = status(dev)
      if not st.recalculating then break end
      assert.is_true(st.recalculate >= 0 and st.recalculate <= st.provided_sectors)
      sleep(0.1)
    end
    assert.is_false(st.recalculating)
    local m = st.mismatches
    assert.equal(("\0"):rep(65536), direct(dev.path, 2 * 1024 * 1024, 65536))
    assert.equal(m, status(dev).mismatches)
    -- done recalculating (6.1 keeps its flag, and prints "recalculate"): still the same table
    assert.equal(st.provided_sectors, st.recalculate)
    local live = require("devmapper.core").dm_table("spec-igr", {keys = true})
    assert.is_true(require("devmapper.table").same_targets(dm.table {dm.integrity(fields)}:targets(nil, "plan", "x"), live))
    dev:remove()
  end)

  it("integrity as a stack member under crypt: apply, apply again (the kernel's own values), teardown", function()
    local l = support.loops(1, "8MiB")
    local s = dm.stack {prefix = "spec_ig",
                        ig = dm.integrity {l, tag_size = 4, format = true, options = {internal_hash = "crc32c"}, length = 4096},
                        top = dm.crypt {"ig", key = dm.key.random(64)}}
    support.defer(function() pcall(dm.cleanup, "spec_ig") end)
    s:apply()
    local data = pattern("under crypt", 64 * 1024)
    support.write("/dev/mapper/spec_ig-top", 0, data)
    assert.equal(data, direct("/dev/mapper/spec_ig-top", 0, #data))
    for _, step in ipairs(s:plan()) do assert.equal("keep", step.op, step.name) end
    s:apply()
    s:teardown()
    assert.same({}, support.names())
    s:apply()
    assert.equal(data, direct("/dev/mapper/spec_ig-top", 0, #data))
    s:teardown()
    assert.same({}, support.names())
  end)
end)
