--- Declarative stacks: named members (tables or targets, which may name
-- other members), planned, applied in dependency order with rollback and
-- idempotently, torn down in the order the kernel's holders dictate.
-- Member M of a stack with prefix P is the device "P-M" with the UUID
-- "DMLUA-P-M", so that dm.cleanup(P) finds exactly what a crashed script made.
-- @module devmapper.stack
local check = require "devmapper.check"
local core = require "devmapper.core"
local device = require "devmapper.device"
local dmtable = require "devmapper.table"
local kernel = require "devmapper.kernel"
local scope = require "devmapper.scope"
local keyring = require "devmapper.keyring"
local transaction = require "devmapper.transaction"

local stack = {}

local Stack = {__name = "devmapper.Stack"}
Stack.__index = Stack

local Plan = {__name = "devmapper.Plan"}

local Status = {__name = "devmapper.StackStatus"}

-- Letters, digits and '_' only: the first '-' after it ends the prefix in a
-- UUID, so prefix "a" never matches the devices of prefix "a-b".
local function check_prefix(op, prefix)
  if type(prefix) ~= "string" or not prefix:match("^[%w_]+$") or #prefix > 64 then
    check.fail(op, nil, "field 'prefix' must be 1 to 64 letters, digits or '_' (got %s)", tostring(prefix))
  end
end

--- The UUID a stack gives a member.
-- @treturn string "DMLUA-<prefix>-<member>"
function stack.uuid(prefix, member) return "DMLUA-" .. prefix .. "-" .. member end

local function is_path(s) return s:sub(1, 1) == "/" or s:match("^%d+:%d+$") ~= nil end

-- The members a member's segments name, sorted; unknown names are refused.
local function deps_of(members, m, prefix)
  local out, seen = {}, {}
  for i, seg in ipairs(members[m]) do
    for _, d in ipairs(seg:devices()) do
      if type(d) == "string" and not is_path(d) and not seen[d] then
        if not members[d] then
          check.fail("stack", prefix .. "-" .. m, "segment %d (%s) names %s, which is not a member", i, seg.type, check.quote(d))
        end
        seen[d] = true
        out[#out + 1] = d
      end
    end
  end
  table.sort(out)
  return out
end

-- Members in dependency order (a member after those it names); ties by name.
local function order_of(members, prefix)
  local names = {}
  for m in pairs(members) do names[#names + 1] = m end
  table.sort(names)
  local out, state = {}, {}
  local function visit(m, path)
    if state[m] == "done" then return end
    path[#path + 1] = m
    if state[m] == "visiting" then
      check.fail("stack", prefix, "members name each other in a cycle: %s", table.concat(path, " -> "))
    end
    state[m] = "visiting"
    for _, d in ipairs(deps_of(members, m, prefix)) do visit(d, path) end
    path[#path] = nil
    state[m] = "done"
    out[#out + 1] = m
  end
  for _, m in ipairs(names) do visit(m, {}) end
  return out
end

--- A stack: `dm.stack {prefix = P, name = table_or_target, ...}`.
-- A member's segments may name another member ("base") where a device goes.
-- @tparam table def {prefix = string (letters, digits, '_'), member = Table|Target|table text, ...}
-- @treturn Stack
-- @usage local s = dm.stack {prefix = "demo", base = dm.table {dm.linear(l1), dm.linear(l2)},
--                           top = dm.linear("base", {length = 2048})}
-- print(s:plan()); s:apply(); s:teardown()
function stack.new(def)
  if type(def) ~= "table" then check.fail("stack", nil, "expected a table {prefix = ..., name = table}, got %s", type(def)) end
  check_prefix("stack", def.prefix)
  local s = setmetatable({prefix = def.prefix, members = {}}, Stack)
  for k, v in pairs(def) do
    if k ~= "prefix" then
      if type(k) ~= "string" then
        check.fail("stack", def.prefix, "members must be named (name = table), got a %s key", type(k))
      end
      local name = check.name("stack", def.prefix .. "-" .. k)
      check.uuid("stack", name, stack.uuid(def.prefix, k))
      s.members[k] = device.as_table(v, "stack", name)
    end
  end
  if next(s.members) == nil then check.fail("stack", def.prefix, "a stack needs at least one member") end
  s.order = order_of(s.members, def.prefix)
  return s
end

--- The device name of a member: "<prefix>-<member>".
function Stack:name(member) return self.prefix .. "-" .. member end

--- The Device of a member (raises if it does not exist).
function Stack:device(member) return device.open(self:name(member)) end

--- How member names resolve in tables (dm.create's lookup).
function Stack:lookup()
  return function(n)
    if self.members[n] then return {path = "/dev/mapper/" .. self:name(n)} end
  end
end

-- Resolution where members that do not exist yet answer from `planned`.
local function context(self, planned)
  local ctx = dmtable.context(self:lookup())
  local facts, dev, name = ctx.facts, ctx.dev, ctx.name
  function ctx.facts(d) return planned[d] or facts(d) end
  function ctx.dev(d) return planned[d] and planned[d].path or dev(d) end
  function ctx.name(d) return planned[d] and planned[d].path or name(d) end
  return ctx
end

-- What a member needs: "create", "reload", "resume", "keep" or "foreign";
-- its targets, resolved with ctx (one for all members: each device is read
-- once); what runs before it is created (as command lines, for plans).
local function decide(self, m, ctx)
  local name = self:name(m)
  local info = kernel.call("dm_info", name)
  if info and info.uuid ~= stack.uuid(self.prefix, m) then return {op = "foreign", info = info} end
  local t = self.members[m]
  local d = {info = info, targets = t:targets(ctx, "plan", name)}
  if not info then
    d.op, d.before = "create", t:before_create_lines(ctx)
    return d
  end
  local live = kernel.call("dm_table", name, {keys = true})
  if not dmtable.same_targets(d.targets, live) then
    d.op, d.live = "reload", dmtable.from_targets(live)
  elseif info.suspended then
    d.op = "resume"
  else
    d.op = "keep"
  end
  return d
end

local function refuse_foreign(op, self, m, d)
  check.fail(op, self:name(m), "exists and is not part of stack '%s' (its uuid is %s, not %s)",
             self.prefix, tostring(d.info.uuid), stack.uuid(self.prefix, m))
end

--- What apply would do, member by member in dependency order:
-- {{op = "create"|"reload"|"resume"|"keep", member =, name =, uuid =, targets =}, ...};
-- tostring gives it as dmsetup commands. No state is changed.
-- @tparam[opt] boolean lenient list a device that is not the stack's (op "foreign") instead of raising
-- @treturn Plan
-- @usage print(s:plan())
function Stack:plan(lenient)
  local plan, planned = setmetatable({}, Plan), {}
  local ctx = context(self, planned)
  for _, m in ipairs(self.order) do
    local d = decide(self, m, ctx)
    if d.op == "foreign" and not lenient then refuse_foreign("plan", self, m, d) end
    if d.op == "create" then
      local last = d.targets[#d.targets]
      planned[m] = {path = "/dev/mapper/" .. self:name(m), sectors = last.start + last.length, logical_block_size = 512,
                    planned = true}
    end
    d.member, d.name, d.uuid = m, self:name(m), stack.uuid(self.prefix, m)
    plan[#plan + 1] = d
  end
  return plan
end

-- A step's command lines (l: where to add them).
local function commands(p, l)
  for _, c in ipairs(p.before or {}) do l[#l + 1] = c end
  if p.op == "create" then
    l[#l + 1] = kernel.render("dm_create", p.name, p.targets, {uuid = p.uuid})
  elseif p.op == "reload" then
    l[#l + 1] = kernel.render("dm_load", p.name, p.targets)
    l[#l + 1] = kernel.render("dm_suspend", p.name)
    l[#l + 1] = kernel.render("dm_resume", p.name)
  elseif p.op == "resume" then
    l[#l + 1] = kernel.render("dm_resume", p.name)
  else
    l[#l + 1] = ("# %s: %s"):format(p.name, p.op == "keep" and "up to date" or "not part of this stack")
  end
  return l
end

function Plan:__tostring()
  if kernel.json then return require("devmapper.json").encode(self) end
  local l = {}
  for _, p in ipairs(self) do commands(p, l) end
  return table.concat(l, "\n")
end

-- As JSON: each step's member, device, operation and command lines.
function Plan:__json()
  local out = {}
  for i, p in ipairs(self) do
    out[i] = {member = p.member, name = p.name, uuid = p.uuid, op = p.op, commands = commands(p, {})}
  end
  return out
end

--- Make the kernel match the stack, in dependency order: missing members
-- are created (their COWs zeroed first), changed ones reloaded (load, then
-- suspend, resume), suspended ones resumed, the rest left alone, so a second
-- apply changes nothing. On failure everything this apply did is undone and
-- the error names the step. Registers a teardown with the open dm.scope().
-- Scripts applying, tearing down or cleaning up the same prefix take turns.
-- @treturn Stack
function Stack:apply()
  local lock <close> = kernel.lock(self.prefix)
  local tx = transaction.begin("apply", self.prefix)
  local made, reloaded = false, {}
  local ctx = context(self, {})
  for _, m in ipairs(self.order) do
    local name = self:name(m)
    local d = tx:step("plan " .. name, decide, self, m, ctx)
    if d.op == "foreign" then tx:step("plan " .. name, refuse_foreign, "apply", self, m, d) end
    if d.op == "create" then
      tx:step("create " .. name, device.make, name, self.members[m], d.targets, ctx, {uuid = stack.uuid(self.prefix, m)})
      made = true
    elseif d.op == "reload" then
      local dev = device.named(name)
      -- the old keys stay in the device's keyring until nothing can roll back to them
      tx:step("reload " .. name, dev.reload_targets, dev, d.targets, {settle = false})
      tx:undo("table of " .. name, function() dev:reload(d.live) end)
      reloaded[#reloaded + 1] = name
    elseif d.op == "resume" then
      tx:step("resume " .. name, device.ensure_resumed, name)
    end
  end
  tx:done()
  for _, name in ipairs(reloaded) do
    local ok, err = pcall(keyring.settle_live, name)
    if not ok then kernel.warn(("keyring of %s: %s"):format(name, tostring(err))) end
  end
  if made then scope.track("stack " .. self.prefix, function() self:teardown() end) end
  return self
end

-- Whether a device in `waiting` (by major:minor) lies anywhere beneath the
-- device `name`.
local function on_waiting(name, waiting, depth)
  local ok, deps = pcall(kernel.call, "dm_deps", name)
  for _, d in ipairs(ok and deps or {}) do
    local mm = d.major .. ":" .. d.minor
    if waiting[mm] then return true end
    local bok, f = pcall(kernel.blkdev, mm)
    if bok and f.dm_name and depth < 16 and on_waiting(f.dm_name, waiting, depth + 1) then return true end
  end
  return false
end

-- Resume the suspended ones among names, each after every suspended device
-- beneath it: a resume over a suspended device would wait on it (with udev,
-- udev's probe of the resumed device would, and the resume with it).
local function resume_all(names, infos)
  local suspended, waiting = {}, {}
  for _, n in ipairs(names) do
    local info = infos[n]
    if info.suspended then
      local s = {name = n, dev = info.major .. ":" .. info.minor}
      suspended[#suspended + 1], waiting[s.dev] = s, s
    end
  end
  local progress = true
  while next(waiting) and progress do
    progress = false
    for _, s in ipairs(suspended) do
      if waiting[s.dev] then
        if not on_waiting(s.name, waiting, 0) then
          device.ensure_resumed(s.name)
          waiting[s.dev], progress = nil, true
        end
      end
    end
  end
  for _, s in ipairs(suspended) do if waiting[s.dev] then device.ensure_resumed(s.name) end end
end

-- The dm info of each name that exists: the names, and the infos by name.
local function infos_of(names)
  local exist, infos = {}, {}
  for _, n in ipairs(names) do
    local info = kernel.call("dm_info", n)
    if info then exist[#exist + 1], infos[n] = n, info end
  end
  return exist, infos
end

local ENXIO = 6

-- Remove the devices `names` (their dm infos in `infos`, just read), each
-- once nothing holds it any more (the kernel's holders), suspended ones
-- resumed first. Every device is tried; one error lists what is left (a
-- remove that failed, a device something still holds), with `left` and
-- `retry` as scope.run_all gives them.
local function remove_all(op, label, names, infos)
  resume_all(names, infos)
  local failed, held, left = {}, {}, names
  repeat
    local keep, progress = {}, false
    for _, n in ipairs(left) do
      local info = infos[n]
      -- a device that never got a table has no block device yet: no holders
      local fok, f = pcall(kernel.blkdev, info.major .. ":" .. info.minor)
      held[n] = fok and #f.holders > 0 and f.holders or nil
      if not held[n] and not failed[n] then
        local dev = device.named(n)
        local rok, err = pcall(dev.remove, dev)
        if rok or (type(err) == "table" and err.errno == ENXIO) then progress = true else failed[n] = err end
      end
      if failed[n] or held[n] then keep[#keep + 1] = n end
    end
    left = keep
  until not progress or #left == 0
  if #left == 0 then return end
  local why = {}
  for i, n in ipairs(left) do
    if failed[n] then
      why[i] = ("%s (%s)"):format(n, tostring(failed[n]))
    else
      local by = {}
      for j, h in ipairs(held[n]) do
        local ok, bf = pcall(kernel.blkdev, h)
        by[j] = ok and bf.path or h
      end
      why[i] = ("%s (held by %s)"):format(n, table.concat(by, ", "))
    end
  end
  core.error {op = op, name = label, errno = 16, left = left,
              retry = function() return remove_all(op, label, infos_of(left)) end,
              message = ("%d of %d devices left: %s"):format(#left, #names, table.concat(why, "; "))}
end

--- Remove the stack's members that exist (and carry its UUID), top first
-- as the kernel's holders say, resuming suspended ones first.
function Stack:teardown()
  local lock <close> = kernel.lock(self.prefix)
  local names, infos = {}, {}
  for i = #self.order, 1, -1 do
    local m = self.order[i]
    local name = self:name(m)
    local info = kernel.call("dm_info", name)
    if info and info.uuid == stack.uuid(self.prefix, m) then names[#names + 1], infos[name] = name, info end
  end
  remove_all("teardown", self.prefix, names, infos)
end

--- Each member's state, in dependency order (also indexed by member):
-- {member =, name =, state = "missing"|"current"|"changed"|"suspended"|"foreign",
--  info = dm info, status = status lines}; tostring gives one line each.
function Stack:status()
  local states = {create = "missing", reload = "changed", resume = "suspended", keep = "current", foreign = "foreign"}
  local out = setmetatable({}, Status)
  for i, p in ipairs(self:plan(true)) do
    local e = {member = p.member, name = p.name, state = states[p.op], info = p.info}
    if p.info and p.op ~= "foreign" then e.status = kernel.call("dm_status", p.name) end
    out[i], out[p.member] = e, e
  end
  return out
end

function Status:__tostring()
  local l = {}
  for _, e in ipairs(self) do
    local st = {}
    for _, s in ipairs(e.status or {}) do
      st[#st + 1] = ("%d %d %s%s"):format(s.start, s.length, s.type, s.params ~= "" and " " .. s.params or "")
    end
    l[#l + 1] = ("%s: %s%s"):format(e.name, e.state, #st > 0 and "  " .. table.concat(st, "; ") or "")
  end
  return table.concat(l, "\n")
end

function Stack:__tostring() return "devmapper.Stack " .. self.prefix end

--- Remove every device whose UUID carries the prefix (DMLUA-<prefix>-...),
-- as after a crash of the script that made them, in holder order; nothing else.
-- @tparam string prefix
-- @treturn {string,...} the names removed
-- @usage dm.cleanup("demo")
function stack.cleanup(prefix)
  check_prefix("cleanup", prefix)
  local lock <close> = kernel.lock(prefix)
  local want = "DMLUA-" .. prefix .. "-"
  local names, infos = {}, {}
  for _, d in ipairs(kernel.call("dm_list")) do
    local info = kernel.call("dm_info", d.name)
    if info and info.uuid and info.uuid:sub(1, #want) == want then names[#names + 1], infos[d.name] = d.name, info end
  end
  table.sort(names)
  remove_all("cleanup", prefix, names, infos)
  -- keyrings of devices that were never made or are gone (a kill in between)
  keyring.cleanup(prefix .. "-")
  return names
end

stack.Stack = Stack
return setmetatable(stack, {__call = function(_, def) return stack.new(def) end})
