--- @module devmapper

--- writecache: writes go to a fast device first and are written back to
-- the origin later; reads of them are served from it (dm-writecache.c:
-- <p|s> <origin> <cache> <block size> <#options> <option>...). Options are
-- word pairs (`high_watermark 50`) or flags, printed back in the kernel's
-- order and lower case.
--
-- The cache device must hold a writecache superblock or start with zeros
-- (the kernel formats it then). Nothing here zeroes it: it may hold writes
-- not yet on the origin.
--
-- Built as dm.writecache {cache =, origin =, mode = "s" | "p" (or persistent = true for "p"),
-- block = 4096 (bytes: 512 to 4096, a power of 2), options = {high_watermark = 50,
-- low_watermark = 45, writeback_jobs =, autocommit_blocks =, autocommit_time = ms,
-- max_age = ms, start_sector =, pause_writeback = ms, "cleaner", "metadata_only",
-- "fua" | "nofua" (p only)}, length =}
-- @function writecache
-- @within Target builders
-- @usage dm.writecache {cache = ssd, origin = disk, options = {high_watermark = 50}}
local check = require "devmapper.check"
local field = require "devmapper.field"
local target = require "devmapper.target"

-- s (SSD) or p (persistent memory), in any case; printed in lower case
local mode = {}
function mode.text(w)
  local l = w:lower()
  if l ~= "s" and l ~= "p" then return nil, "must be s (a block device) or p (persistent memory)" end
  return l
end
function mode.lua(v)
  if type(v) ~= "string" then return nil, ("must be \"s\" or \"p\", got %s"):format(type(v)) end
  return mode.text(v)
end
function mode.format(v) return v end

local u32 = field.number {parser = "scanf", bits = 32}
local percent = field.number {parser = "scanf", bits = 32, max = 100}
local ORDER = {"start_sector", "high_watermark", "low_watermark", "writeback_jobs", "autocommit_blocks",
               "autocommit_time", "max_age", "cleaner", "fua", "nofua", "metadata_only", "pause_writeback"}

local options = field.options {
  order = ORDER, fold = "all", max = 18, always = true,
  values = {
    start_sector = field.sector,
    high_watermark = percent,
    low_watermark = percent,
    writeback_jobs = u32,
    autocommit_blocks = u32,
    autocommit_time = field.number {parser = "scanf", bits = 32, max = 3600000},
    max_age = field.number {parser = "scanf", bits = 32, max = 86400000},
    pause_writeback = field.number {parser = "scanf", bits = 32, max = 60000},
  },
  spaced = {start_sector = 1, high_watermark = 1, low_watermark = 1, writeback_jobs = 1, autocommit_blocks = 1,
            autocommit_time = 1, max_age = 1, pause_writeback = 1},
}

-- calculate_memory_size: how many blocks a cache area of `bytes` holds
-- (a 64-byte superblock, 16 bytes per block, rounded up to a block; then the blocks)
local function blocks_in(bytes, block)
  local n = bytes // (block + 16)
  while n > 0 do
    local offset = (64 + 16 * n + block - 1) & ~(block - 1)
    if offset + n * block <= bytes then return n end
    n = n - 1
  end
  return 0
end

-- Whether a device has DAX (persistent memory mapped directly), from sysfs.
local function has_dax(f)
  if not (f and f.major) then return nil end
  local h = io.open(("/sys/dev/block/%d:%d/queue/dax"):format(f.major, f.minor), "r")
  if not h then return nil end
  local v = h:read("l")
  h:close()
  return v == "1"
end

local decl = {
  type = "writecache",
  params = {
    {"mode", mode, default = "s"},
    {"origin", field.device},
    {"cache", field.device},
    {"block", field.number {parser = "scanf", bits = 32, min = 512, max = 4096, power_of_2 = true}, default = 4096},
    {"options", options},
  },
  extra = {"persistent"},
  -- dm.writecache {cache =, origin =, mode = "s" | "p" (or persistent = true for "p"),
  -- block = 4096 (bytes: 512 to 4096, a power of 2), options = {high_watermark = 50,
  -- low_watermark = 45, writeback_jobs =, autocommit_blocks =, autocommit_time = ms,
  -- max_age = ms, start_sector =, pause_writeback = ms, "cleaner", "metadata_only",
  -- "fua" | "nofua" (p only)}, length =}
  new = function(opts)
    local f = target.fields("writecache", opts, {})
    if f.persistent ~= nil then
      if type(f.persistent) ~= "boolean" then
        check.fail("writecache", nil, "field 'persistent' must be true or false, got %s", type(f.persistent))
      end
      if f.mode ~= nil then check.fail("writecache", nil, "field 'mode' is given twice (also as persistent)") end
      f.mode = f.persistent and "p" or "s"
      f.persistent = nil
    end
    return f
  end,
  length = function(r, ctx) return ctx.facts(r.origin).sectors end,
  areas = function(r) return {{r.origin, 0, r.length, "length"}} end,
  check = function(r, ctx, fail)
    local o = r.options
    local high = o.high_watermark or 50
    local low = o.low_watermark or 45
    if high < low then
      fail("options", "high_watermark (%d) must be at least low_watermark (%d)%s", high, low,
           (o.high_watermark and o.low_watermark) and "" or " (the kernel's defaults are 50 and 45)")
    end
    if r.mode == "s" and (o.fua or o.nofua) then fail("options", "fua and nofua are for persistent memory (mode p) only") end
    if o.fua and o.nofua then fail("options", "may hold only one of fua, nofua") end
    if r.mode == "p" and o.pause_writeback then fail("options", "pause_writeback is for mode s only") end
    local of, cf = ctx.facts(r.origin), ctx.facts(r.cache)
    if of and cf and of.major and of.major == cf.major and of.minor == cf.minor then
      fail("cache", "must not be the origin (%s)", ctx.name(r.origin))
    end
    for _, d in ipairs {{"origin", of, r.origin}, {"cache", cf, r.cache}} do
      local lbs = d[2] and d[2].logical_block_size or 512
      if r.block < lbs then
        fail("block", "%d is below the logical block size of the %s %s (%d bytes)", r.block, d[1], ctx.name(d[3]), lbs)
      end
    end
    if r.mode == "p" and has_dax(cf) == false then
      -- 6.1 asks the device's DAX whether it is synchronous without a check that it has one
      fail("mode", "p needs a persistent-memory (DAX) cache device: %s has no DAX", ctx.name(r.cache))
    end
    if cf then
      local start = o.start_sector or 0
      if start >= cf.sectors then
        fail("options", "start_sector %d is past the end of the cache device %s (%d sectors)", start, ctx.name(r.cache), cf.sectors)
      end
      if r.mode == "s" and blocks_in((cf.sectors - start) * 512, r.block) == 0 then
        fail("cache", "%s is too small to hold one %d-byte block and its metadata", ctx.name(r.cache), r.block)
      end
    end
  end,
  -- <error> <blocks> <free> <under writeback> <reads> <read hits> <writes> <write hits
  -- uncommitted> <write hits committed> <writes around> <writes allocate> <writes blocked on
  -- freelist> <flushes> <discards> (6.1; earlier kernels print the first four only)
  status = function(w)
    local names = {"error", "blocks", "free", "writeback", "reads", "read_hits", "writes", "write_hits_uncommitted",
                   "write_hits_committed", "writes_around", "writes_allocate", "writes_blocked_on_freelist",
                   "flushes", "discards"}
    local r = {}
    for i, n in ipairs(names) do r[n] = math.tointeger(tonumber(w[i] or "")) end
    if r.blocks and r.free then r.used = r.blocks - r.free end
    return r
  end,
  messages = {},
}

-- The messages, each one word (writecache_message); flush waits for the writeback.

--- dev:flush(): write back every block the cache holds, and wait for it.
-- @function Device:flush
-- @within Target messages

--- dev:flush_on_suspend(): write everything back when the device is next suspended.
-- @function Device:flush_on_suspend
-- @within Target messages

--- dev:cleaner(): write back everything and keep no new writes in the cache
-- (the `cleaner` option, as a message).
-- @function Device:cleaner
-- @within Target messages

--- dev:clear_stats(): set the status's counters back to zero.
-- @function Device:clear_stats
-- @within Target messages

for _, m in ipairs {"flush", "flush_on_suspend", "cleaner", "clear_stats"} do
  decl.messages[m] = function(dev, ...)
    if select("#", ...) > 0 then check.fail(m, dev.name, "takes no arguments (got %d)", select("#", ...)) end
    return dev:message(m)
  end
end

return target.define(decl)
