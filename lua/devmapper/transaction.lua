--- Transactions: a multi-step operation (take a snapshot, apply a stack)
-- that either completes or is undone. Each step is named; on the first
-- failure, what the earlier steps made is undone, newest first, and the
-- error raised names the step. Makers called inside a step (dm.create, ...)
-- register their undo with the transaction, which is the innermost scope.
local core = require "devmapper.core"
local scope = require "devmapper.scope"

local transaction = {}

local Tx = {__name = "devmapper.Transaction"}
Tx.__index = Tx

--- Begin a transaction.
-- @tparam string op the operation, for the error ("take", "apply", ...)
-- @tparam ?string name the device or stack concerned
function transaction.begin(op, name)
  return setmetatable({op = op, name = name, scope = scope.new()}, Tx)
end

--- Register how to undo something (newest undone first).
function Tx:undo(what, fn)
  scope.track(what, fn)
end

--- Run one step: its results, or roll back and raise
-- "op 'name': step 'label' failed: <the step's error>" (fields step, cause);
-- undo tries every earlier step; if some failed, the message says what is
-- left, and the error carries `left` and `retry` (see scope.run_all).
function Tx:step(label, fn, ...)
  local r = table.pack(pcall(fn, ...))
  if r[1] then return table.unpack(r, 2, r.n) end
  local err = r[2]
  local undone, uerr = pcall(self.scope.close, self.scope)
  core.error {op = self.op, name = self.name, step = label, cause = err,
              errno = type(err) == "table" and err.errno or 0,
              message = ("step '%s' failed: %s"):format(label, tostring(err))
                        .. (undone and "" or "; undoing the earlier steps failed too: " .. tostring(uerr)),
              -- what could not be undone, and a way to try again
              left = not undone and type(uerr) == "table" and uerr.left or nil,
              retry = not undone and type(uerr) == "table" and uerr.retry or nil}
end

--- Success: forget the undo list.
function Tx:done()
  self.scope.undo = {}
  self.scope:close()
end

return transaction
