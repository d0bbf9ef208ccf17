--- Snapshots: the snapshot, snapshot-origin and snapshot-merge targets, and
-- the article's two snapshot workflows as single calls that can not leave a
-- device suspended or half-built: `take` (Point B, a point-in-time view of a
-- live device, for a backup) and `overlay` (Point A, a writable layer over a
-- base that stays untouched, to discard or to merge into the base).
-- @module devmapper.snapshot
local check = require "devmapper.check"
local device = require "devmapper.device"
local dmtable = require "devmapper.table"
local kernel = require "devmapper.kernel"
local progress = require "devmapper.progress"
local scope = require "devmapper.scope"
local size = require "devmapper.size"
local target = require "devmapper.target"
local transaction = require "devmapper.transaction"

local snapshot = {}

local decl = target.get("snapshot")

--- A snapshot segment: reads come from the COW device for changed chunks and
-- from the origin for the rest; writes go to the COW device. `dm.snapshot`
-- is this function (callable), and also carries take, overlay, status,
-- merge and prepare.
-- @tparam table opts {origin = dev, cow = dev, persistent = true|false|"P"|"PO"|"N",
--   chunk = 8 (sectors, a power of 2, or a size; 0: the kernel's choice),
--   features = {"discard_zeroes_cow", ...}, length = origin's size, reuse = false}
-- A device created with it first gets the COW's first chunk zeroed (a new
-- store), unless reuse = true or the store is not persistent.
-- @treturn Target
-- @usage dm.create("snap", dm.snapshot {origin = "/dev/mapper/base-real", cow = l3, chunk = 8})
snapshot.new = decl.builder

--- A snapshot-merge segment: merges a persistent COW store back into its
-- origin, in the background, while presenting the merged view.
-- @tparam table opts as for dm.snapshot (persistent must not be false)
snapshot.merge = target.get("snapshot-merge").builder

--- A snapshot-origin segment (dm.origin): the origin device as seen through
-- it; each write first saves the old data into the COW of every snapshot of it.
snapshot.origin = target.get("snapshot-origin").builder

--- Zero the first chunk of a COW device, so that the kernel starts a new
-- store there instead of reading an old one (data I/O, not a kernel object).
-- @param cow a Loop, a Device or a path
-- @tparam[opt=8] integer chunk sectors
function snapshot.prepare(cow, chunk)
  chunk = chunk or 8
  if type(chunk) == "string" then chunk = size.sectors(chunk, "chunk") end
  decl.zero_cow(type(cow) == "table" and cow.path or cow, chunk)
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
  local r = target.status("snapshot", st)
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
  kernel.critical(function()
    tx:step("suspend " .. what, dev.suspend, dev)
    tx:step("resume " .. what, dev.resume, dev)
  end)
end

local function remove(dev)
  if dev:info() then
    device.ensure_resumed(dev.name)
    dev:remove()
  end
end

local function refuse_open(op, dev)
  local info = device.settled_info(dev.name)
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
  local seg = snapshot.new {origin = origin, cow = opts.cow, chunk = opts.chunk, persistent = opts.persistent,
                            reuse = opts.reuse}
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

local function new_overlay(o, what)
  local ov = setmetatable(o, Overlay)
  scope.track(what, function() if not ov.gone then ov:discard() end end)
  return ov
end

--- A writable overlay over a base that stays untouched: a new snapshot
-- device over the base, whose writes go to the COW (a live CD's RAM
-- overlay over a read-only image). Nothing else may write to the base
-- while the overlay exists. See dm.snapshot.volatile for the article's
-- Point A, which turns a device that is in use into such an overlay in place.
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
  local seg = snapshot.new {origin = base, cow = opts.cow, chunk = opts.chunk, persistent = opts.persistent,
                            reuse = opts.reuse}
  dmtable {seg}:validate(dmtable.context(), "overlay", name)

  local tx = transaction.begin("overlay", name)
  local view = tx:step("create overlay", device.create, name, seg)
  tx:done()
  return new_overlay({origin = base, view = view, cow = opts.cow, chunk = seg.chunk, store = seg.persistent},
                     "overlay " .. name)
end

--- The article's Point A, in place: a live device, mounted and in use,
-- becomes volatile without being closed. Its table is copied into a new
-- device NAME-real; the device then gets a snapshot of NAME-real on the COW
-- (loaded first, then suspend, resume), so that from then on its writes go
-- to the COW and NAME-real stays as it was. `commit` merges the changes
-- into NAME-real while the device stays in use, then gives the device its
-- own table back; `discard` throws them away, and needs the device closed
-- (whatever has it open has seen the changes). On failure at any step,
-- everything is put back as it was.
-- @param dev a Device or its name
-- @tparam table opts {cow = Loop|Device|path, chunk = 8, persistent = true, reuse = false}
-- @treturn Overlay with .view (the device itself), :usage(), :discard(), :commit()
-- @usage local ov = dm.snapshot.volatile(base, {cow = l3}); ...; ov:commit()
function snapshot.volatile(dev, opts)
  opts = opts or {}
  local base = as_device(dev, "volatile")
  local seg = snapshot.new {origin = base, cow = opts.cow, chunk = opts.chunk, persistent = opts.persistent,
                            reuse = opts.reuse}
  local ctx = dmtable.context()
  dmtable {seg}:validate(ctx, "volatile", base.name)
  local info, live = base:info(), base:table {keys = true}
  for _, s in ipairs(live) do
    if s.type:match("^snapshot") then
      check.fail("volatile", base.name, "already takes part in a snapshot (its table is %s)", s.type)
    end
  end
  if info.suspended then check.fail("volatile", base.name, "is suspended") end

  local tx = transaction.begin("volatile", base.name)
  local real = tx:step("create real", device.create, base.name .. "-real", live,
                       {readonly = info.readonly, uuid = uuid_with(info, "-real")})
  seg.origin = real
  -- the device is loaded, not created, with the snapshot: zero the COW here
  tx:step("prepare cow", function() dmtable {seg}:before_create(ctx) end)
  swap(tx, base, seg, {readonly = info.readonly}, "device")
  tx:done()
  return new_overlay({origin = real, real = real, view = base, cow = opts.cow, chunk = seg.chunk,
                      store = seg.persistent, readonly = info.readonly}, "volatile " .. base.name)
end

--- How full the COW is (see dm.snapshot.status).
function Overlay:usage()
  return snapshot.status(self.view)
end

-- In place: the device gets NAME-real's table back, then NAME-real goes
-- (what is done is remembered, so that a call after a failure goes on from there).
local function back_in_place(self, tx)
  if not self.back then
    local own = tx:step("read real table", self.real.table, self.real, {keys = true})
    swap(tx, self.view, own, {readonly = self.readonly}, "device")
    self.back = true
  end
  tx:step("remove real", remove, self.real)
end

--- Throw the changes away: the base is as it was. The device written to
-- must be closed (unmounted): what has it open has seen the changes.
function Overlay:discard()
  if self.gone then return end
  refuse_open("discard", self.view)
  local tx = transaction.begin("discard", self.view.name)
  if self.real then back_in_place(self, tx) else tx:step("remove overlay", remove, self.view) end
  tx:done()
  self.gone = true
end

local sleep = require("devmapper.core").sleep

--- Make the changes permanent: the device's table becomes snapshot-merge
-- (loaded first, then suspend, resume), the kernel merges the COW into the
-- base in the background while the device stays usable, and this waits
-- (polling, at most opts.timeout seconds) until it has finished. Then an
-- overlay device is removed (it must be closed), or, in place, the device
-- gets its own table back and stays in use. Needs a persistent store and a
-- writable base. If the wait times out, calling commit again resumes it.
-- While it waits, `progress` ticks with the sectors merged of those to merge
-- (devmapper.progress: phase "merge", unit "sectors"); if the callback raises,
-- the wait stops as on a timeout (the merge goes on; commit again to finish)
-- and the error is the failed step's cause.
-- @tparam[opt] table opts {timeout = 60, progress = function | false}
function Overlay:commit(opts)
  if self.gone then check.fail("commit", self.view.name, "the overlay was already discarded or committed") end
  if self.store == "N" then
    check.fail("commit", self.view.name, "needs a persistent store (persistent = true): a volatile one can not be merged")
  end
  if kernel.blkdev(type(self.origin) == "table" and self.origin.path or self.origin).readonly then
    check.fail("commit", self.view.name, "can not merge into %s: it is read-only", tostring(self.origin.path or self.origin))
  end
  if not self.real then refuse_open("commit", self.view) end
  local timeout = opts and opts.timeout or 60
  local tick = progress.of("commit", opts and opts.progress)
  local tx = transaction.begin("commit", self.view.name)
  if not self.merging then
    swap(tx, self.view, snapshot.merge {origin = self.origin, cow = self.cow, chunk = self.chunk, persistent = self.store},
         {readonly = self.readonly}, "merge")
    self.merging = true
  end
  tx:step("wait for merge", function()
    if kernel.dry_run or self.back then return end
    local deadline, delay = os.time() + timeout, 0.01
    local total, done
    while true do
      local st = snapshot.status(self.view)
      if st.state ~= "active" then error(("the merge stopped: the store is %s"):format(st.state), 0) end
      if tick then
        -- sectors merged since this wait began, of those there were then
        total = total or st.used - st.metadata
        done = math.max(done or 0, math.min(total, total - (st.used - st.metadata)))
        tick {op = "snapshot.commit", phase = "merge", done = done, total = total, unit = "sectors",
              finished = st.used == st.metadata or nil}
      end
      if st.used == st.metadata then return end
      if os.time() >= deadline then
        error(("not finished after %g s (%d sectors left): call commit again to keep waiting"):format(
              timeout, st.used - st.metadata), 0)
      end
      sleep(delay)
      delay = math.min(delay * 2, 0.5)
    end
  end)
  if self.real then back_in_place(self, tx) else tx:step("remove overlay", remove, self.view) end
  tx:done()
  self.gone = true
end

function Overlay:__tostring()
  return ("devmapper.Overlay %s"):format(self.view.name)
end

return setmetatable(snapshot, {__call = function(_, opts) return snapshot.new(opts) end})
