--- @module devmapper

--- unstriped: one stripe of a striped layout, as a device of its own
-- (dm-unstripe.c: <#stripes> <chunk> <stripe#> <dev> <offset>): the
-- chunks of stripe `stripe` (from 0) of `stripes` stripes of `chunk`
-- sectors each, laid over `dev` from `offset` as dm-striped lays them.
-- The kernel checks only the first `length` sectors at `offset`, though
-- the stripe's chunks run `stripes` times as far; the module checks that
-- they fit, and takes stripe numbers 0 to stripes - 1 only (the kernel's
-- check lets stripe# = #stripes through).
--
-- Built as dm.unstriped {dev, stripes =, chunk = sectors or size, stripe = 0.., offset = 0, length =}
-- @function unstriped
-- @within Target builders
-- @usage dm.unstriped {striped_dev, stripes = 2, chunk = 16, stripe = 1}
local field = require "devmapper.field"
local target = require "devmapper.target"

-- kstrtouint, printed back with %d: a value above 2^31-1 would read back negative
local count = field.number {parser = "kstrto", bits = 32, min = 1, max = 0x7fffffff}

-- The sectors of dev the stripe's last chunk ends at.
local function extent(r) return r.offset + (r.length // r.chunk - 1) * r.stripes * r.chunk + (r.stripe + 1) * r.chunk end

return target.define {
  type = "unstriped",
  params = {
    {"stripes", count},
    {"chunk", field.number {parser = "kstrto", bits = 32, min = 1, sectors = true}},
    {"stripe", field.number {parser = "kstrto", bits = 32, max = 0x7fffffff}},
    {"dev", field.device},
    {"offset", field.sector, default = 0},
  },
  -- dm.unstriped {dev, stripes =, chunk = sectors or size, stripe = 0.., offset = 0, length =}
  new = function(opts) return target.fields("unstriped", opts, {"dev"}) end,
  -- every whole row of stripes the device holds, this stripe's share of it
  length = function(r, ctx)
    local rows = (ctx.facts(r.dev).sectors - r.offset) // (r.chunk * r.stripes)
    return rows * r.chunk
  end,
  areas = function(r) return {{r.dev, r.offset, r.length, "offset"}} end,
  check = function(r, ctx, fail)
    if r.stripe >= r.stripes then
      fail("stripe", "%d must be below the number of stripes (%d): stripes are numbered from 0", r.stripe, r.stripes)
    end
    if r.length % r.chunk ~= 0 then fail("length", "%d must be divisible by chunk (%d)", r.length, r.chunk) end
    local f = ctx.facts(r.dev)
    if f and r.length >= r.chunk and extent(r) > f.sectors then
      fail("length", "%d sectors of stripe %d of %d run to sector %d, past the end of %s (%d sectors)",
           r.length, r.stripe, r.stripes, extent(r), ctx.name(r.dev), f.sectors)
    end
  end,
  -- the kernel reports nothing while it runs
  status = function() return {} end,
}
