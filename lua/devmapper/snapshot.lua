--- Snapshots: the snapshot, snapshot-origin and snapshot-merge targets, and
-- the article's two snapshot workflows as single calls that can not leave a
-- device suspended or half-built: `take` (Point B, a point-in-time view of a
-- live device, for a backup) and `overlay` (Point A, a writable layer over a
-- base that stays untouched, to discard or to merge into the base).
local check = require "devmapper.check"
local core = require "devmapper.core"
local device = require "devmapper.device"
local dmtable = require "devmapper.table"
local kernel = require "devmapper.kernel"
local scope = require "devmapper.scope"
local size = require "devmapper.size"
local target = require "devmapper.target"
local transaction = require "devmapper.transaction"

local snapshot = {}

local stores = {P = true, PO = true, N = true}

-- persistent = true | false | "P" | "PO" | "N"  ->  the kernel's store letters
local function store_of(p)
  if p == nil or p == true then return "P" end
  if p == false then return "N" end
  if type(p) == "string" and stores[p:upper()] then return p:upper() end
  return p
end

local function chunk_of(c)
  if c == nil then return 8 end
  if type(c) == "string" then return size.sectors(c, "chunk") end
  return c
end

local function same_device(a, b)
  if a.major ~= nil and b.major ~= nil then return a.major == b.major and a.minor == b.minor end
  return a.path ~= nil and a.path == b.path
end

local function snap_fields(opts)
  if type(opts) ~= "table" then check.fail("snapshot", nil, "expected a table of options, got %s", type(opts)) end
  return {origin = opts.origin or opts[1], cow = opts.cow or opts[2], store = store_of(opts.persistent),
          chunk = chunk_of(opts.chunk), features = opts.features or {}, length = opts.length,
          reuse = opts.reuse}
end

--- A snapshot segment: reads come from the COW device for changed chunks and
-- from the origin for the rest; writes go to the COW device. `dm.snapshot`
-- is this function (callable), and also carries take, overlay, status,
-- merge and prepare.
-- @tparam table opts {origin = dev, cow = dev, persistent = true|false|"P"|"PO"|"N",
--   chunk = 8 (sectors, a power of 2, or a size), features = {"discard_zeroes_cow", ...},
--   length = origin's size, reuse = false (a stack then keeps the COW's existing store)}
-- dm.create uses the COW as it is: take, overlay and stacks zero its first
-- chunk (see prepare); with dm.create, call dm.snapshot.prepare first.
-- @treturn Target
-- @usage dm.create("snap", dm.snapshot {origin = "/dev/mapper/base-real", cow = l3, chunk = 8})
function snapshot.new(opts)
  return target.new("snapshot", snap_fields(opts))
end

--- A snapshot-merge segment: merges a persistent COW store back into its
-- origin, in the background, while presenting the merged view.
-- @tparam table opts as for dm.snapshot (persistent must not be false)
function snapshot.merge(opts)
  return target.new("snapshot-merge", snap_fields(opts))
end

--- A snapshot-origin segment: the origin device as seen through it; each
-- write first saves the old data into the COW of every snapshot of it.
-- @param dev the device holding the data (in the article, base-real)
-- @tparam[opt] table opts {length = dev's size}
-- @usage dm.origin("/dev/mapper/base-real")
function snapshot.origin(dev, opts)
  return target.new("snapshot-origin", {origin = dev, length = opts and opts.length})
end

local function origin_length(s, ctx) return ctx.facts(s.origin).sectors end

local function check_fits(s, ctx, fail)
  local o = ctx.facts(s.origin)
  if o and s.length and s.length > o.sectors then
    fail("length", "must fit in the origin: %d sectors is more than %s has (%d)", s.length, ctx.name(s.origin), o.sectors)
  end
  return o
end

for _, ty in ipairs {"snapshot", "snapshot-merge"} do
  target.define(ty, {
    params = function(s, ctx)
      local p = {ctx.dev(s.origin), ctx.dev(s.cow), tostring(s.store), tostring(s.chunk)}
      if #s.features > 0 then p[#p + 1] = #s.features end
      for _, f in ipairs(s.features) do p[#p + 1] = f end
      return table.concat(p, " ")
    end,
    parse = function(w)
      local f = {origin = w[1], cow = w[2], store = w[3] and w[3]:upper(), chunk = math.tointeger(tonumber(w[4])),
                 features = {}}
      for i = 1, tonumber(w[5]) or 0 do f.features[i] = w[5 + i] end
      return f
    end,
    length = origin_length,
    devices = function(s) return {s.origin, s.cow} end,
    check = function(s, ctx, fail)
      if s.origin == nil then fail("origin", "is required") end
      if s.cow == nil then fail("cow", "is required") end
      if not stores[s.store] then
        fail("persistent", "must be true, false, \"P\", \"PO\" or \"N\" (got %s)", tostring(s.store))
      end
      if ty == "snapshot-merge" and s.store == "N" then
        fail("persistent", "must be persistent: only a persistent store can be merged")
      end
      local c = s.chunk
      if math.type(c) ~= "integer" or c <= 0 or c & (c - 1) ~= 0 then
        fail("chunk", "must be a power of 2 (sectors), got %s", tostring(c))
      end
      local o, w = check_fits(s, ctx, fail), ctx.facts(s.cow)
      if o and w and same_device(o, w) then fail("cow", "must not be the origin (%s)", ctx.name(s.origin)) end
      for _, d in ipairs {{"origin", o, s.origin}, {"cow", w, s.cow}} do
        local bs = d[2] and (d[2].logical_block_size or 512) // 512
        if bs and c % bs ~= 0 then
          fail("chunk", "%d must be a multiple of the %s's logical block size (%s: %d sectors)", c, d[1], ctx.name(d[3]), bs)
        end
      end
    end,
  })
end

target.define("snapshot-origin", {
  params = function(s, ctx) return ctx.dev(s.origin) end,
  parse = function(w) return {origin = w[1]} end,
  length = origin_length,
  devices = function(s) return {s.origin} end,
  check = function(s, ctx, fail)
    if s.origin == nil then fail("origin", "is required") end
    check_fits(s, ctx, fail)
  end,
})

--- Zero the first chunk of a COW device, so that the kernel starts a new
-- store there instead of reading an old one (data I/O, not a kernel object).
-- @param cow a Loop, a Device or a path
-- @tparam[opt=8] integer chunk sectors
function snapshot.prepare(cow, chunk)
  chunk = chunk_of(chunk)
  local path = type(cow) == "table" and cow.path or cow
  if kernel.trace or kernel.dry_run then
    kernel.out:write(kernel.dry_run and "(dry-run) " or "+ ",
                     ("dd if=/dev/zero of=%s bs=512 count=%d conv=notrunc\n"):format(path, chunk))
  end
  if kernel.dry_run then return end
  local f = kernel.blkdev(path)
  if #f.holders > 0 then
    check.fail("prepare", f.path, "COW device is in use (held by %s)", table.concat(f.holders, ", "))
  end
  local fh, err, code = io.open(f.path, "r+b")
  if not fh then core.error {op = "prepare", name = f.path, errno = code or 0, message = err} end
  local ok, werr, wcode = fh:write(("\0"):rep(chunk * 512))
  local cok, cerr, ccode = fh:close() -- the last close writes the block device's cache through
  if not ok or not cok then
    core.error {op = "prepare", name = f.path, errno = wcode or ccode or 0, message = werr or cerr}
  end
end

local Status = {__name = "devmapper.SnapshotStatus"}
Status.__index = Status

function Status:__tostring()
  if self.state ~= "active" then return self.state end
  return ("%d/%d sectors used (%d metadata)"):format(self.used, self.total, self.metadata)
end

--- Parse a snapshot's (or snapshot-merge's) status.
-- @param st status text ("24/8192 16"), a status line {type=, params=}, or a Device
-- @treturn table {state = "active"|"invalid"|"overflow"|"merge failed"|"unknown",
--   used =, total =, metadata = (sectors, when active), invalid =, overflow =, merge_failed =}
-- @usage print(dm.snapshot.status(view))  -- 24/8192 sectors used (16 metadata)
function snapshot.status(st)
  if getmetatable(st) == device.Device then
    local name = st.name
    st = st:status()[1]
    if not st or (st.type ~= "snapshot" and st.type ~= "snapshot-merge") then
      check.fail("snapshot.status", name, "is not a snapshot (its target is %s)", st and st.type or "none")
    end
  end
  if type(st) == "table" then st = st.params end
  if type(st) ~= "string" then
    check.fail("snapshot.status", nil, "expected status text, a status line or a Device, got %s", type(st))
  end
  local used, total, meta = st:match("^%s*(%d+)/(%d+)%s*(%d*)")
  local r
  if used then
    r = {state = "active", used = math.tointeger(tonumber(used)), total = math.tointeger(tonumber(total)),
         metadata = math.tointeger(tonumber(meta)) or 0}
  else
    r = {state = st:match("^%s*(.-)%s*$"):lower()}
  end
  r.invalid, r.overflow, r.merge_failed = r.state == "invalid", r.state == "overflow", r.state == "merge failed"
  return setmetatable(r, Status)
end

-- The Device of a device-mapper device given as a Device or a name.
local function as_device(dev, op)
  if getmetatable(dev) == device.Device then return dev end
  if type(dev) == "string" and not dev:find("/", 1, true) then return device.open(dev) end
  check.fail(op, nil, "expected a device-mapper Device or its name (put a linear device over a loop), got %s",
             tostring(dev))
end

-- Drop an inactive table and resume: the state before a failed swap.
local function restore(dev)
  return function()
    local info = dev:info()
    if info and info.inactive_table then pcall(dev.clear, dev) end
    device.ensure_resumed(dev.name)
  end
end

local function swap(tx, dev, t, opts, what)
  tx:undo("restore " .. dev.name, restore(dev))
  tx:step("load " .. what, dev.load, dev, t, opts)
  tx:step("suspend " .. what, dev.suspend, dev)
  tx:step("resume " .. what, dev.resume, dev)
end

local function remove(dev)
  if dev:info() then
    device.ensure_resumed(dev.name)
    dev:remove()
  end
end

local function refuse_open(op, dev)
  local info = dev:info()
  if info and info.open_count > 0 then
    check.fail(op, dev.name, "is still open (open count %d): close or unmount it first", info.open_count)
  end
end

local function uuid_with(info, suffix)
  return info.uuid and #info.uuid + #suffix <= 128 and info.uuid .. suffix or nil
end

local Snapshot = {__name = "devmapper.Snapshot"}
Snapshot.__index = Snapshot

--- Take a point-in-time snapshot of a live device (the article's Point B)
-- in one call: the origin's table is copied into a new device NAME-real,
-- the COW's first chunk zeroed, a read-only snapshot device made over
-- NAME-real, and the origin's new table (snapshot-origin over NAME-real)
-- loaded before the origin is suspended, swapped and resumed. From then on
-- each write to the origin first saves the old data into the COW.
-- On failure at any step, everything is put back as it was and the error
-- names the step.
-- @param dev the origin: a Device or its name
-- @tparam table opts {cow = Loop|Device|path, chunk = 8, persistent = true,
--   name = NAME .. "-snap", reuse = false (keep the COW's existing store)}
-- @treturn Snapshot with .view (the read-only Device), :usage() and :release()
-- @usage local snap = dm.snapshot.take(base, {cow = l3, chunk = 8})
-- print(snap.view.path, snap:usage()); snap:release()
function snapshot.take(dev, opts)
  opts = opts or {}
  local origin = as_device(dev, "take")
  local names = {real = origin.name .. "-real", view = opts.name or origin.name .. "-snap"}
  local seg = snapshot.new {origin = origin, cow = opts.cow, chunk = opts.chunk, persistent = opts.persistent}
  dmtable {seg}:validate(dmtable.context(), "take", origin.name)

  local info, live = origin:info(), origin:table {keys = true}
  for _, s in ipairs(live) do
    if s.type == "snapshot-origin" or s.type == "snapshot-merge" then
      check.fail("take", origin.name, "already has a snapshot (its table is %s): release it first", s.type)
    end
  end
  if info.suspended then check.fail("take", origin.name, "is suspended") end

  local tx = transaction.begin("take", origin.name)
  local real = tx:step("create real", device.create, names.real, live,
                       {readonly = info.readonly, uuid = uuid_with(info, "-real")})
  if not opts.reuse and seg.store ~= "N" then tx:step("prepare cow", snapshot.prepare, opts.cow, seg.chunk) end
  seg.origin = real
  local view = tx:step("create snapshot", device.create, names.view, seg,
                       {readonly = true, uuid = uuid_with(info, "-snap")})
  swap(tx, origin, snapshot.origin(real), {readonly = info.readonly}, "origin")
  tx:done()

  local snap = setmetatable({origin = origin, real = real, view = view, cow = opts.cow, chunk = seg.chunk,
                             readonly = info.readonly}, Snapshot)
  scope.track("snapshot of " .. origin.name, function() if not snap.released then snap:release() end end)
  return snap
end

--- How full the COW is: {used, total, metadata} sectors (tostring reads well).
function Snapshot:usage()
  return snapshot.status(self.view)
end

--- Back to business as usual (the article's dismantling): the origin gets
-- its own table again (load, suspend, resume), then the snapshot and
-- NAME-real are removed. The view must be closed. If this fails half-way
-- it raises naming the step, leaves nothing suspended, and can be called again.
function Snapshot:release()
  if self.released then return end
  refuse_open("release", self.view)
  local tx = transaction.begin("release", self.origin.name)
  if not self.swapped_back then
    local own = tx:step("read real table", self.real.table, self.real, {keys = true})
    swap(tx, self.origin, own, {readonly = self.readonly}, "origin")
    self.swapped_back = true
  end
  tx:step("remove snapshot", remove, self.view)
  tx:step("remove real", remove, self.real)
  tx:done()
  self.released = true
end

function Snapshot:__tostring()
  return ("devmapper.Snapshot %s of %s"):format(self.view.name, self.origin.name)
end

local Overlay = {__name = "devmapper.Overlay"}
Overlay.__index = Overlay

--- A writable overlay over a base that stays untouched (the article's
-- Point A): a snapshot device over the base, whose writes go to the COW.
-- Nothing else may write to the base while the overlay exists.
-- @param base a Loop, a Device or a path (a read-only loop will do)
-- @tparam table opts {cow = Loop|Device|path, chunk = 8, name = BASE .. "-overlay",
--   persistent = true (false: the store's index is kept in memory only, as for a
--   RAM-backed live CD; then there is no commit), reuse = false}
-- @treturn Overlay with .view (the writable Device), :usage(), :discard(), :commit()
-- @usage local ov = dm.snapshot.overlay(base, {cow = l3}); ...; ov:discard()
function snapshot.overlay(base, opts)
  opts = opts or {}
  local path = type(base) == "table" and base.path or base
  local name = opts.name or (tostring(path):match("([^/]+)$") .. "-overlay")
  local seg = snapshot.new {origin = base, cow = opts.cow, chunk = opts.chunk, persistent = opts.persistent}
  dmtable {seg}:validate(dmtable.context(), "overlay", name)

  local tx = transaction.begin("overlay", name)
  if not opts.reuse and seg.store ~= "N" then tx:step("prepare cow", snapshot.prepare, opts.cow, seg.chunk) end
  local view = tx:step("create overlay", device.create, name, seg)
  tx:done()

  local ov = setmetatable({base = base, view = view, cow = opts.cow, chunk = seg.chunk, store = seg.store}, Overlay)
  scope.track("overlay " .. name, function() if not ov.gone then ov:discard() end end)
  return ov
end

--- How full the COW is (see dm.snapshot.status).
function Overlay:usage()
  return snapshot.status(self.view)
end

--- Throw the changes away: the overlay is removed, the base is as it was.
function Overlay:discard()
  if self.gone then return end
  refuse_open("discard", self.view)
  local tx = transaction.begin("discard", self.view.name)
  tx:step("remove overlay", remove, self.view)
  tx:done()
  self.gone = true
end

local sleep = require("devmapper.core").sleep

--- Make the changes permanent: the overlay's table becomes snapshot-merge
-- (loaded first, then suspend, resume), the kernel merges the COW into the
-- base in the background, and this waits (polling, at most opts.timeout
-- seconds) until it has finished, then removes the overlay. Needs a
-- persistent store. If the wait times out, calling commit again resumes it.
-- @tparam[opt] table opts {timeout = 60}
function Overlay:commit(opts)
  if self.gone then check.fail("commit", self.view.name, "the overlay was already discarded or committed") end
  if self.store == "N" then
    check.fail("commit", self.view.name, "needs a persistent store (persistent = true): a volatile one can not be merged")
  end
  refuse_open("commit", self.view)
  local timeout = opts and opts.timeout or 60
  local tx = transaction.begin("commit", self.view.name)
  if not self.merging then
    swap(tx, self.view, snapshot.merge {origin = self.base, cow = self.cow, chunk = self.chunk, persistent = self.store},
         nil, "merge")
    self.merging = true
  end
  tx:step("wait for merge", function()
    if kernel.dry_run then return end
    local deadline, delay = os.time() + timeout, 0.01
    while true do
      local st = snapshot.status(self.view)
      if st.state ~= "active" then error(("the merge stopped: the store is %s"):format(st.state), 0) end
      if st.used == st.metadata then return end
      if os.time() >= deadline then
        error(("not finished after %g s (%d sectors left): call commit again to keep waiting"):format(
              timeout, st.used - st.metadata), 0)
      end
      sleep(delay)
      delay = math.min(delay * 2, 0.5)
    end
  end)
  tx:step("remove overlay", remove, self.view)
  tx:done()
  self.gone = true
end

function Overlay:__tostring()
  return ("devmapper.Overlay %s"):format(self.view.name)
end

return setmetatable(snapshot, {__call = function(_, opts) return snapshot.new(opts) end})
