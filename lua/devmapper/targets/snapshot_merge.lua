--- @module devmapper

--- snapshot-merge: merges a persistent snapshot store back into its origin
-- while presenting the merged view (dm-snap.c; the snapshot's parameters).
-- @function snapshot_merge
-- @within Target builders
local target = require "devmapper.target"
local snapshot = require "devmapper.targets.snapshot"

local decl = {type = "snapshot-merge"}
for k, v in pairs(snapshot) do
  if decl[k] == nil and k ~= "allowed" and k ~= "builder" and k ~= "before_create" then decl[k] = v end
end
decl.check = function(r, ctx, fail)
  if r.persistent == "N" then fail("persistent", "must be persistent: only a persistent store can be merged") end
  snapshot.check(r, ctx, fail)
end

return target.define(decl)
