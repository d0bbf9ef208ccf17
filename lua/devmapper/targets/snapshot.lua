--- @module devmapper

--- snapshot: a point-in-time view whose changed chunks live on a COW
-- device (dm-snap.c: <origin> <cow> <P|PO|N> <chunk> [<#features> <feature>...]).
-- Before a device is created with a snapshot segment built from Lua, the
-- COW's first chunk is zeroed so that the kernel starts a new store there
-- (unless reuse = true, or the store is not persistent); a segment parsed
-- from table text names an existing store and is used as it is.
--
-- Built as dm.snapshot {origin =, cow =, persistent = true | false | "P" | "PO" | "N",
-- chunk = 8 (sectors or a size; 0: the kernel's choice), features =, length =, reuse = false}
-- @function snapshot
-- @within Target builders
-- @usage dm.snapshot {origin = "/dev/mapper/base-real", cow = l3, chunk = 8}
local check = require "devmapper.check"
local core = require "devmapper.core"
local field = require "devmapper.field"
local kernel = require "devmapper.kernel"
local target = require "devmapper.target"

-- The store: P (persistent), PO (persistent, overflow reported), N (transient);
-- from Lua also persistent = true ("P") or false ("N"). The kernel reads only
-- the first two letters, so anything else is refused here.
local stores = {P = "P", PO = "PO", N = "N"}
local store = {}
function store.text(w)
  local v = stores[w:upper()]
  if not v then return nil, "must be P (persistent), PO (persistent, overflow) or N (transient)" end
  return v
end
function store.lua(v)
  if v == true then return "P" elseif v == false then return "N" end
  if type(v) ~= "string" then return nil, ("must be true, false, \"P\", \"PO\" or \"N\", got %s"):format(type(v)) end
  return store.text(v)
end
function store.format(v) return v end

-- kstrtoul; 0 lets the kernel choose (the store's own, or 32 sectors)
local chunk = field.number {parser = "kstrto", sectors = true, max = 0x7fffffff >> 9}

local function lbs(ctx, dev)
  local f = ctx.facts(dev)
  return f and (f.logical_block_size or 512) // 512, f
end

-- Zero the first chunk of a COW device, so that the kernel starts a new
-- store there instead of reading an old one (data I/O, not a kernel object).
-- @param cow a Loop, a Device or a path
-- @tparam[opt=8] integer chunk sectors
local function zero_cow(cow, sectors)
  local path = type(cow) == "table" and cow.path or cow
  local line = ("dd if=/dev/zero of=%s bs=512 count=%d conv=notrunc"):format(kernel.quote(path), sectors)
  if kernel.dry_run then return kernel.note(line) end
  local f = kernel.blkdev(path)
  if #f.holders > 0 then
    check.fail("prepare", f.path, "COW device is in use (held by %s)", table.concat(f.holders, ", "))
  end
  local fh, err, code = io.open(f.path, "r+b")
  if not fh then core.error {op = "prepare", name = f.path, errno = code or 0, message = err} end
  local ok, werr, wcode = fh:write(("\0"):rep(sectors * 512))
  local cok, cerr, ccode = fh:close() -- the last close writes the block device's cache through
  if not ok or not cok then
    core.error {op = "prepare", name = f.path, errno = wcode or ccode or 0, message = werr or cerr}
  end
  kernel.note(line)
end

-- What zeroing covers: the chunk, or the kernel's default when it chooses.
local function first_chunk(s) return s.chunk > 0 and s.chunk or 32 end

local decl = {
  type = "snapshot",
  params = {
    {"origin", field.device},
    {"cow", field.device},
    {"persistent", store, default = "P"},
    {"chunk", chunk, default = 8},
    {"features", field.options {order = {"discard_zeroes_cow", "discard_passdown_origin"}, max = 2, fold = true,
                                requires = {discard_passdown_origin = "discard_zeroes_cow"}}},
  },
  flags = {"reuse"},
  -- dm.snapshot {origin =, cow =, persistent = true | false | "P" | "PO" | "N",
  -- chunk = 8 (sectors or a size; 0: the kernel's choice), features =, length =, reuse = false}
  new = function(opts) return target.fields("snapshot", opts, {"origin", "cow"}) end,
  length = function(r, ctx) return ctx.facts(r.origin).sectors end,
  areas = function(r) return {{r.origin, 0, r.length, "length"}} end,
  check = function(r, ctx, fail)
    local ob, o = lbs(ctx, r.origin)
    local cb, c = lbs(ctx, r.cow)
    if o and c and o.major == c.major and o.minor == c.minor then
      fail("cow", "must not be the origin (%s)", ctx.name(r.origin))
    end
    local n = r.chunk
    if n > 0 and n & (n - 1) ~= 0 then fail("chunk", "must be a power of 2 (sectors), got %d", n) end
    if n == 0 and r.persistent == "N" then
      fail("chunk", "0 (the kernel's choice) needs a persistent store: a transient one has no header to take it from")
    end
    for _, d in ipairs {{"origin", ob, r.origin}, {"cow", cb, r.cow}} do
      if d[2] and n % d[2] ~= 0 then
        fail("chunk", "%d must be a multiple of the %s's logical block size (%s: %d sectors)", n, d[1], ctx.name(d[3]), d[2])
      end
    end
    -- a persistent store needs its header chunk and a first metadata chunk
    local need = 2 * math.max(n > 0 and n or 32, cb or 1)
    if c and r.persistent ~= "N" and c.sectors < need then
      fail("cow", "%s (%d sectors) is too small for a persistent store of %d-sector chunks: it needs at least %d",
           ctx.name(r.cow), c.sectors, n > 0 and n or 32, need)
    end
  end,
  before_create = {
    run = function(s, ctx) zero_cow(ctx.name(s.cow), first_chunk(s)) end,
    show = function(s, ctx)
      return ("dd if=/dev/zero of=%s bs=512 count=%d conv=notrunc"):format(ctx.name(s.cow), first_chunk(s))
    end,
    when = function(s) return not s.from_text and not s.reuse and s.persistent ~= "N" end,
  },
  -- "24/8192 16" (used/total sectors, metadata sectors), or Invalid, Overflow, Merge failed
  status = function(w)
    local used, total = (w[1] or ""):match("^(%d+)/(%d+)$")
    local r
    if used then
      r = {state = "active", used = math.tointeger(tonumber(used)), total = math.tointeger(tonumber(total)),
           metadata = math.tointeger(tonumber(w[2] or "0")) or 0}
    else
      r = {state = table.concat(w, " "):lower()}
    end
    r.invalid, r.overflow, r.merge_failed = r.state == "invalid", r.state == "overflow", r.state == "merge failed"
    return r
  end,
  zero_cow = zero_cow,
}

return target.define(decl)
