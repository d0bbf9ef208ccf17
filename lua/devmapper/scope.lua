--- Scopes: `local s <close> = dm.scope()` undoes everything made while it is
-- open (devices, loops, snapshots, stacks), in reverse order, at scope exit,
-- even when the block raised. Things already undone by hand are skipped.
-- Undo goes on: every step is tried; what failed is reported in one error
-- that lists what is left and can try it again.
-- @module devmapper.scope
local core = require "devmapper.core"
local kernel = require "devmapper.kernel"

local scope = {}

local Scope = {__name = "devmapper.Scope"}
Scope.__index = Scope

local open = {} -- the stack of open scopes; the innermost one collects

--- Open a scope.
-- @treturn Scope
-- @usage do local s <close> = dm.scope() ... end
function scope.new()
  local s = setmetatable({undo = {}}, Scope)
  open[#open + 1] = s
  return s
end

--- Register how to undo something just made (called by the module's makers).
-- @tparam string what a label for error messages
-- @tparam function fn undoes it; must tolerate it being gone already
function scope.track(what, fn)
  local s = open[#open]
  if s then s.undo[#s.undo + 1] = {what = what, fn = fn} end
end

--- Run every step {what =, fn =} (in the order given), go on past failures,
-- and raise one error object naming what is left: fields `left` (the steps
-- that failed, each with its `error`) and `retry` (a function that tries
-- those again, the same way).
-- @tparam string op for the error ("undo", "teardown", ...)
-- @tparam ?string name
-- @tparam table steps
function scope.run_all(op, name, steps)
  local left = {}
  for _, u in ipairs(steps) do
    local ok, err = pcall(u.fn)
    if not ok then left[#left + 1] = {what = u.what, fn = u.fn, error = err} end
  end
  if #left == 0 then return end
  local l = {}
  for i, u in ipairs(left) do l[i] = ("%s (%s)"):format(u.what, tostring(u.error)) end
  core.error {op = op, name = name, errno = type(left[1].error) == "table" and left[1].error.errno or 0,
              message = ("%d of %d left: %s"):format(#left, #steps, table.concat(l, "; ")), left = left,
              retry = function() return scope.run_all(op, name, left) end}
end

--- Undo everything, newest first, trying every step; raises one error
-- listing what is left (see scope.run_all), whose `retry` tries again.
function Scope:close()
  for i = #open, 1, -1 do
    if open[i] == self then table.remove(open, i) end
  end
  local steps = {}
  for i = #self.undo, 1, -1 do steps[#steps + 1] = self.undo[i] end
  self.undo = {}
  scope.run_all("undo", nil, steps)
end

-- When the block raised, its error wins; what undo left is a warning.
function Scope:__close(err)
  if err == nil then return self:close() end
  local ok, uerr = pcall(self.close, self)
  if not ok then kernel.warn("while unwinding after an error: " .. tostring(uerr)) end
end

scope.Scope = Scope
return scope
