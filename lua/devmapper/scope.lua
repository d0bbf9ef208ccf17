--- Scopes: `local s <close> = dm.scope()` undoes everything made while it is
-- open (devices, loops, keyring keys), in reverse order, at scope exit, even
-- when the block raised. Things already undone by hand are skipped.
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

--- Undo everything, newest first; raises the first failure after trying all.
function Scope:close()
  for i = #open, 1, -1 do
    if open[i] == self then table.remove(open, i) end
  end
  local first
  while #self.undo > 0 do
    local u = table.remove(self.undo)
    local ok, err = pcall(u.fn)
    if not ok and not first then first = err end
  end
  if first then error(first, 0) end
end

-- When the block raised, its error wins over a failure to undo.
function Scope:__close(err)
  if err then pcall(self.close, self) else self:close() end
end

scope.Scope = Scope
return scope
