--- Keyring bookkeeping for tables that name keys in the kernel keyring
-- (dm-crypt's ":64:logon:devmapper:..."). Each such device has a keyring
-- of its own in the user keyring, "devmapper:dev:<name>", that links the
-- keys its tables name. The kernel counts the links: a key goes when the
-- last ring holding it goes. What a device holds is read from the keyring
-- (and, where needed, from one read of its table), never remembered on a
-- Lua object; a failed read never unlinks anything.
local core = require "devmapper.core"
local kernel = require "devmapper.kernel"

local keyring = {}

--- The ring of a device.
function keyring.ring(name) return "devmapper:dev:" .. name end

-- The keys a resolved table names: {[description] = Key, or true for one already in a keyring}.
local function wanted(targets)
  local w = {}
  for _, s in ipairs(targets) do
    for d, k in pairs(s.ring or {}) do w[d] = k end
  end
  return w
end

-- The keys named by keyring reference in the kernel's parameter text (any target).
local function named(targets)
  local w = {}
  for _, s in ipairs(targets) do
    for word in s.params:gmatch("%S+") do
      local d = word:match("^:%d+:logon:(devmapper:.+)$")
      if d then w[d] = true end
    end
  end
  return w
end

local function set_of(list)
  local s = {}
  for _, d in ipairs(list or {}) do s[d] = true end
  return s
end

--- Whether a resolved table names keys to put in the keyring.
function keyring.names_keys(targets) return next(wanted(targets)) ~= nil end

--- Before a table goes to the kernel: link its keys into the device's ring.
-- Returns, or nil when the table names no keyring key: a function that
-- takes back exactly what this added (for a failed ioctl), and one for
-- once the table is live, that unlinks the keys the ring held before and
-- the table does not name (from what was read here: no second read).
-- @tparam string name the device
-- @tparam table targets resolved targets (devmapper.table)
-- @tparam[opt] boolean fresh the device was just created without a table:
--   any ring of its name is a stale one, replaced without a search
function keyring.add(name, targets, fresh)
  local want = wanted(targets)
  if next(want) == nil then return nil end
  local ring = keyring.ring(name)
  local before = not fresh and kernel.call("ring_keys", ring) or nil
  local had, added = set_of(before), {}
  local function undo()
    core.ring_release() -- (the task that would have let go of the keys never ran)
    for i = #added, 1, -1 do pcall(kernel.call, "ring_unlink", ring, added[i]) end
    if before == nil then
      local ok, left = pcall(kernel.call, "ring_keys", ring)
      if ok and left and #left == 0 then pcall(kernel.call, "ring_drop", ring) end
    end
  end
  local descs = {}
  for d in pairs(want) do descs[#descs + 1] = d end
  table.sort(descs)
  local ok, err = pcall(function()
    local fresh = before == nil   -- no ring: the first key makes it, with no second search
    for _, d in ipairs(descs) do
      if not had[d] then
        local done = true
        if want[d] == true then
          -- a reference read from text: link the key where it is already (if it is in @u)
          done = kernel.call("ring_link", ring, d, fresh)
        else
          kernel.call("ring_add", ring, d, want[d], fresh)
        end
        if done then
          added[#added + 1] = d
          fresh = false
        end
      end
    end
  end)
  if not ok then
    undo()
    error(err, 0)
  end
  local function settle()
    for _, d in ipairs(before or {}) do
      if not want[d] then kernel.call("ring_unlink", ring, d) end
    end
  end
  return undo, settle
end

-- Make the ring link exactly the keys in `want` (a set of descriptions).
local function settle(name, want)
  local ring = keyring.ring(name)
  local have = kernel.call("ring_keys", ring)
  if have == nil then return end
  if next(want) == nil then
    kernel.call("ring_drop", ring)
    return
  end
  for _, d in ipairs(have) do
    if not want[d] then kernel.call("ring_unlink", ring, d) end
  end
end

--- After a table went live (create, or a reload's resume): the ring keeps
-- only the keys that table names.
-- @tparam string name
-- @tparam table targets the resolved targets now live
function keyring.settle(name, targets)
  local want = {}
  for d in pairs(wanted(targets)) do want[d] = true end
  settle(name, want)
end

--- After a resume or clear done by hand: the ring keeps the keys the live
-- table names, read from the kernel (one read, and only when there is a ring).
function keyring.settle_live(name)
  if kernel.call("ring_keys", keyring.ring(name)) == nil then return end
  settle(name, named(kernel.call("dm_table", name)))
end

--- After the device is gone: its ring goes, and with it every key no other ring holds.
function keyring.drop(name)
  kernel.call("ring_drop", keyring.ring(name))
end

--- After a rename: the ring follows the device.
function keyring.rename(old, new)
  local keys = kernel.call("ring_keys", keyring.ring(old))
  if keys == nil then return end
  for _, d in ipairs(keys) do kernel.call("ring_link", keyring.ring(new), d) end
  kernel.call("ring_drop", keyring.ring(old))
end

--- Rings named after devices whose name starts with prefix and that no
-- longer exist (a script killed between adding a key and creating its
-- device, or before removing its ring): dropped. Returns their names.
function keyring.cleanup(prefix)
  local gone = {}
  for _, ring in ipairs(kernel.call("rings", keyring.ring(prefix))) do
    local dev = ring:sub(#keyring.ring("") + 1)
    if not kernel.call("dm_info", dev) then
      kernel.call("ring_drop", ring)
      gone[#gone + 1] = ring
    end
  end
  return gone
end

return keyring
