--- @module devmapper

--- integrity: a tag (a checksum) kept beside every sector, checked on
-- every read (dm-integrity.c: <dev> <offset> <tag size|-> <J|B|D|R>
-- <#options> <option>...; options are flags or name:value).
--
-- The kernel formats a device whose first 4 KiB (at <offset>) are zero,
-- and refuses one that holds anything else but its own superblock ("The
-- device is not initialized"). Built from Lua with format = true, those
-- 4 KiB are zeroed before the device is created, unless they already hold
-- an integrity superblock (so applying a stack again keeps the data). A
-- fresh sparse file or a new volume is zeroed already; format = true is
-- for a device that held something else, and it is never the default.
-- A fresh format has no valid tags for sectors never written: reads of
-- them fail until they are written, or computed with the recalculate option.
--
-- The kernel prints values of its own choosing back (journal_sectors,
-- interleave_sectors, buffer_sectors, and for J and B their watermark,
-- commit time and bitmap values; the tag size an internal hash gives):
-- a stack compares its members' tables with that in mind.
--
-- Built as dm.integrity {dev, offset = 0 (sectors: where the superblock is), tag_size = bytes or
-- "-" (the internal hash's), mode = "J" | "B" | "D" | "R", options = {internal_hash = "crc32c",
-- block_size = 4096, journal_sectors =, interleave_sectors =, buffer_sectors =,
-- journal_watermark =, commit_time = ms, sectors_per_bit =, bitmap_flush_interval = ms,
-- "allow_discards", "recalculate", "fix_padding", ...}, format = false, length =}
-- length: the data sectors the superblock provides (the device must be formatted), or given.
-- @function integrity
-- @within Target builders
-- @usage dm.integrity {l1, tag_size = 4, options = {internal_hash = "crc32c"}}
local check = require "devmapper.check"
local core = require "devmapper.core"
local field = require "devmapper.field"
local kernel = require "devmapper.kernel"
local target = require "devmapper.target"

local MAGIC = "integrt\0"

-- <tag size>: "-" (the internal hash's size) or 1 to 255 (sscanf %u, not 0)
local tag = {}
local tag_number = field.number {parser = "scanf", bits = 32, min = 1, max = 255}
function tag.text(w)
  if w == "-" then return w end
  return tag_number.text(w)
end
function tag.lua(v)
  if v == nil or v == "-" then return "-" end
  return tag_number.lua(v)
end
function tag.format(v) return v == "-" and v or ("%d"):format(v) end

local mode = {}
local MODES = {J = "journal", B = "bitmap", D = "direct (no journal)", R = "recovery (read-only, no checks)"}
function mode.text(w)
  if not MODES[w] then return nil, "must be J (journal), B (bitmap), D (direct) or R (recovery), in capitals" end
  return w
end
function mode.lua(v)
  if type(v) ~= "string" then return nil, ("must be \"J\", \"B\", \"D\" or \"R\", got %s"):format(type(v)) end
  return mode.text(v)
end
function mode.format(v) return v end

-- A crypto API algorithm name; a key after ':' is not supported here (it would be a secret in the table).
local alg = field.word(function(w)
  if w:find(":", 1, true) then return "takes an algorithm without a key here (keyed hashes are not supported yet)" end
end)

local u32 = field.number {parser = "scanf", bits = 32}
local ORDER = {"block_size", "recalculate", "reset_recalculate", "allow_discards", "journal_sectors",
               "interleave_sectors", "buffer_sectors", "journal_watermark", "commit_time", "sectors_per_bit",
               "bitmap_flush_interval", "fix_padding", "fix_hmac", "legacy_recalculate",
               "internal_hash", "journal_crypt", "journal_mac"}
-- what the kernel prints of its own choosing, whether given or not
local CHOSEN = {journal_sectors = true, interleave_sectors = true, buffer_sectors = true, journal_watermark = true,
                commit_time = true, sectors_per_bit = true, bitmap_flush_interval = true}

local options = field.options {
  order = ORDER, max = 18, always = true,
  values = {
    block_size = field.number {parser = "scanf", bits = 32, min = 512, max = 4096, power_of_2 = true},
    journal_sectors = u32, interleave_sectors = u32, buffer_sectors = u32,
    journal_watermark = field.number {parser = "scanf", bits = 32, max = 100},
    commit_time = u32,
    sectors_per_bit = field.number {parser = "scanf"},
    bitmap_flush_interval = u32,
    internal_hash = alg, journal_crypt = alg, journal_mac = alg,
  },
}

local function path_of(ctx, dev)
  local p = ctx and ctx.name(dev) or dev
  if type(p) == "table" then p = p.path end
  return p
end

-- The integrity superblock at byte offset `at` of a device, or nil (and the first 4 KiB read).
local function superblock(path, at)
  local f = io.open(path, "rb")
  if not f then return nil end
  f:seek("set", at)
  local b = f:read(4096)
  f:close()
  if not b or #b < 4096 then return nil end
  if b:sub(1, 8) ~= MAGIC then return nil, b end
  local version, log2_interleave, tag_size, sections, provided, flags, log2_spb =
    string.unpack("<BBI2I4I8I4B", b, 9)
  return {version = version, interleave_sectors = 1 << log2_interleave, tag_size = tag_size,
          journal_sections = sections, provided_sectors = provided, flags = flags,
          block_size = 512 << log2_spb}
end

-- Zero the first 4 KiB at the offset, unless they hold an integrity superblock.
local function prepare(path, offset)
  local at = offset * 512
  if kernel.trace or kernel.dry_run then
    kernel.out:write(kernel.dry_run and "(dry-run) " or "+ ",
                     ("dd if=/dev/zero of=%s bs=512 seek=%d count=8 conv=notrunc (unless it holds an integrity superblock)\n")
                     :format(path, offset))
  end
  if kernel.dry_run then return end
  local f = kernel.blkdev(path)
  if #f.holders > 0 then
    check.fail("prepare", f.path, "device is in use (held by %s)", table.concat(f.holders, ", "))
  end
  local sb, first = superblock(f.path, at)
  if sb or (first and not first:find("[^\0]")) then return end
  local fh, err, code = io.open(f.path, "r+b")
  if not fh then core.error {op = "prepare", name = f.path, errno = code or 0, message = err} end
  fh:seek("set", at)
  local ok, werr, wcode = fh:write(("\0"):rep(4096))
  local cok, cerr, ccode = fh:close()
  if not ok or not cok then
    core.error {op = "prepare", name = f.path, errno = wcode or ccode or 0, message = werr or cerr}
  end
end

-- "<dev> <offset> <tag> <mode> <n> <opt>..." into its parts
local function split(params)
  local w = field.split(params)
  local opts = {}
  for i = 6, #w do opts[#opts + 1] = w[i] end
  return w, opts
end

local decl = {
  type = "integrity",
  params = {
    {"dev", field.device},
    {"offset", field.sector, default = 0},
    {"tag_size", tag, default = "-"},
    {"mode", mode, default = "J"},
    {"options", options},
  },
  flags = {"format"},
  -- dm.integrity {dev, offset = 0 (sectors: where the superblock is), tag_size = bytes or
  -- "-" (the internal hash's), mode = "J" | "B" | "D" | "R", options = {internal_hash = "crc32c",
  -- block_size = 4096, journal_sectors =, interleave_sectors =, buffer_sectors =,
  -- journal_watermark =, commit_time = ms, sectors_per_bit =, bitmap_flush_interval = ms,
  -- "allow_discards", "recalculate", "fix_padding", ...}, format = false, length =}
  -- length: the data sectors the superblock provides (the device must be formatted), or given.
  new = function(opts) return target.fields("integrity", opts, {"dev"}) end,
  length = function(r, ctx)
    local path = path_of(ctx, r.dev)
    local sb = type(path) == "string" and superblock(path, r.offset * 512)
    if not sb then
      check.fail("integrity", nil, "field 'length' is required: %s holds no integrity superblock yet to read it "
                 .. "from (the kernel formats one when the device is made; its status then gives the provided sectors)",
                 tostring(path))
    end
    return sb.provided_sectors
  end,
  areas = function(r) return {{r.dev, r.offset, nil, "offset"}} end,
  block = function(r) return r.options.block_size or 512 end,
  check = function(r, ctx, fail)
    local o = r.options
    local hash = o.internal_hash
    if r.tag_size == "-" and not hash then fail("tag_size", "\"-\" (the hash's size) needs options.internal_hash") end
    if r.mode == "B" and not hash then fail("mode", "B (bitmap) needs options.internal_hash") end
    if o.allow_discards and not hash then fail("options", "allow_discards needs internal_hash") end
    if (o.recalculate or o.reset_recalculate) and not hash then fail("options", "recalculate needs internal_hash") end
    local f = ctx.facts(r.dev)
    if f and r.offset * 512 + 4096 > f.sectors * 512 then
      fail("offset", "%d leaves no room for the superblock on %s (%d sectors)", r.offset, ctx.name(r.dev), f.sectors)
    end
  end,
  -- the kernel's values of its own choosing are not compared
  same = function(mine, live)
    local a, ao = split(mine)
    local b, bo = split(live)
    if a[1] ~= b[1] or a[2] ~= b[2] or a[4] ~= b[4] or (a[3] ~= "-" and a[3] ~= b[3]) then return false end
    local want = {}
    for _, w in ipairs(ao) do want[w:match("^([^:]+)") or w] = w end
    local seen = {}
    for _, w in ipairs(bo) do
      local n = w:match("^([^:]+)") or w
      seen[n] = true
      if want[n] then
        if want[n] ~= w and not CHOSEN[n] then return false end
      elseif not CHOSEN[n] and not (n == "fix_padding" or n == "recalculate") then
        return false
      end
    end
    for n in pairs(want) do
      if not seen[n] and n ~= "recalculate" and n ~= "fix_padding" then return false end
    end
    return true
  end,
  before_create = {
    when = function(s) return s.format == true and not s.from_text end,
    run = function(s, ctx) prepare(path_of(ctx, s.dev), s.offset) end,
    show = function(s, ctx)
      return ("dd if=/dev/zero of=%s bs=512 seek=%d count=8 conv=notrunc"):format(path_of(ctx, s.dev), s.offset)
    end,
  },
  -- <mismatches> <provided data sectors> <recalculated up to|->: 6.1 keeps the
  -- superblock's recalculating flag (and the position) once it is done, at
  -- the provided sectors
  status = function(w)
    local n = function(i) return math.tointeger(tonumber(w[i] or "")) end
    local pos, provided = w[3] ~= "-" and n(3) or nil, n(2)
    return {mismatches = n(1), provided_sectors = provided, recalculate = pos,
            recalculating = pos ~= nil and (provided == nil or pos < provided)}
  end,
  superblock = superblock,
}

return target.define(decl)
