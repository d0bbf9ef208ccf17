--- @module devmapper

--- log-writes: a device whose every write is passed through to `dev` and
-- also logged, in order, on the `log` device (dm-log-writes.c: <dev> <log
-- dev>), for replaying a filesystem's writes up to any point. Marks put a
-- name into the log (dev:mark("before-fsync")). Status: the entries logged
-- so far and the last log sector used (whether logging stopped: the log
-- device filled up).
--
-- Built as dm.log_writes {dev, log = device, length =}
-- @function log_writes
-- @within Target builders
-- @usage dm.log_writes {l1, log = l2}
local check = require "devmapper.check"
local field = require "devmapper.field"
local kernel = require "devmapper.kernel"
local target = require "devmapper.target"

-- struct log_write_entry: sector, nr_sectors, flags, data_len (4 x 64 bits)
local ENTRY = 32

local decl = {
  type = "log-writes",
  params = {
    {"dev", field.device},
    {"log", field.device},
  },
  -- dm.log_writes {dev, log = device, length =}
  new = function(opts) return target.fields("log-writes", opts, {"dev"}) end,
  length = function(r, ctx) return ctx.facts(r.dev).sectors end,
  areas = function(r) return {{r.dev, 0, r.length, "dev"}} end,
  check = function(r, ctx, fail)
    local d, l = ctx.facts(r.dev), ctx.facts(r.log)
    if d and l and d.major == l.major and d.minor == l.minor then
      fail("log", "must not be the device it logs (%s)", ctx.name(r.dev))
    end
    -- the log's superblock and one entry with its data take two blocks of dev's size
    local bs = d and (d.logical_block_size or 512) // 512 or 1
    if l and l.sectors < 2 * bs then
      fail("log", "%s (%d sectors) can not hold the log's superblock and one entry (%d sectors)",
           ctx.name(r.log), l.sectors, 2 * bs)
    end
  end,
  -- "12 40" or "12 40 logging_disabled": entries logged, the last log sector written
  status = function(w)
    local n = function(x) return math.tointeger(tonumber(x or "")) end
    return {logged_entries = n(w[1]), last_sector = n(w[2]), logging = w[3] ~= "logging_disabled"}
  end,
}

decl.messages = {
  --- dev:mark(name): a mark entry named `name` in the log (one word; at most
  -- a logical block of the device less the entry header and a NUL, which is
  -- where the kernel would cut it).
  -- @function Device:mark
  -- @within Target messages
  mark = function(dev, name)
    if type(name) ~= "string" or name == "" or name:find("[%s%c\xa0]") then
      check.fail("mark", dev.name, "the mark must be one word (no white space or control characters), got %s",
                 type(name) == "string" and check.quote(name) or type(name))
    end
    local lbs = 512
    for _, s in ipairs(dev:table()) do
      if s.type == "log-writes" then
        local ok, f = pcall(kernel.blkdev, s.dev)
        if ok then lbs = f.logical_block_size or lbs end
        break
      end
    end
    if #name > lbs - ENTRY - 1 then
      check.fail("mark", dev.name, "the mark is %d bytes: the kernel keeps at most %d (its logical block of %d bytes, "
                 .. "less the entry's %d and a NUL)", #name, lbs - ENTRY - 1, lbs, ENTRY)
    end
    dev:message("mark " .. name)
  end,
}

return target.define(decl)
