-- A fault at every kernel operation. Each multi-step operation is run once
-- cleanly (counting its kernel operations: device-mapper, loop and keyring
-- calls, reads included), then failed at each of them in turn. After every
-- failure: nothing suspended, no inactive table, the devices exactly as
-- before, no keyring entry left (or, where the failure hit the undo itself,
-- none after dm.cleanup), and the operation succeeds when tried again.
local dm = require "devmapper"
local core = require "devmapper.core"
local support = require "spec.support"
after_each(support.cleanup)

-- Everything an operation can leave: devices and their tables, the rings of
-- the module's keyrings and the keys they link.
local function state()
  local rings = {}
  for _, r in ipairs(core.rings("devmapper:dev:")) do rings[r] = table.concat(core.ring_keys(r) or {}, " ") end
  return {devices = support.world(), rings = rings}
end

-- Make the nth kernel operation from now fail (every kind counts).
local function fail_at(n)
  local i = 0
  dm.kernel.fault = function() i = i + 1 return i == n end
end

local function count_ops(fn, ...)
  local i = 0
  dm.kernel.fault = function() i = i + 1 return false end
  local r = table.pack(pcall(fn, ...))
  dm.kernel.fault = nil
  assert(r[1], r[2])
  return i
end

-- Run op at every fault. undo(result) takes a successful op back to the
-- state before it. o.check(result) looks at the data after a retry;
-- o.resumable: a failed op may stop half-way (release, discard, commit,
-- teardown), and calling it again finishes it; any other must be undone
-- entirely by its failure.
local function every_fault(op, undo, o)
  o = o or {}
  local before, res = state(), nil
  local n = count_ops(function() res = op() end)
  undo(res)
  assert.same(before, state())
  local faults = 0
  for at = 1, n do
    fail_at(at)
    local ok, res = pcall(op)
    dm.kernel.fault = nil
    support.none_suspended()
    if ok then
      -- the fault hit bookkeeping after the change itself (a warning, not an error)
      undo(res)
    else
      faults = faults + 1
      assert.equal("table", type(res), tostring(res))
      assert.is_string(res.op)
      if not o.resumable then
        assert.same(before.devices, state().devices, ("fault %d: %s"):format(at, tostring(res)))
      end
      local again = op() -- tried again, it works (or finishes)
      if o.check then o.check(again) end
      undo(again)
    end
    if not support.same(before.rings, state().rings) then
      dm.cleanup("spf") -- a fault in an undo itself: dm.cleanup finds what it left
    end
    assert.same(before, state(), ("after fault %d"):format(at))
  end
  return faults, n
end

describe("a fault at every kernel operation #kernel", function()
  local warn
  before_each(function() warn, dm.kernel.warn = dm.kernel.warn, function() end end)
  after_each(function()
    dm.kernel.warn, dm.kernel.fault = warn, nil
    -- whatever a failed spec left: its devices (holders first) and their keyrings
    for _ = 1, 3 do
      for _, d in ipairs(dm.list()) do
        if d.name:match("^spf%-") then pcall(function() dm.device(d.name):remove {force = true} end) end
      end
    end
    pcall(dm.cleanup, "spf")
  end)

  it("create and remove a keyring-keyed crypt device", function()
    local l = support.loops(1)
    local k = dm.key.random(64)
    local f = every_fault(function() return dm.create("spf-c", dm.crypt {l, key = k}) end,
                          function(dev) dev:remove() end)
    assert.is_true(f >= 2)
    local dev = dm.create("spf-c", dm.crypt {l, key = k})
    every_fault(function() dev:remove() end, function() dev = dm.create("spf-c", dm.crypt {l, key = k}) end,
                {resumable = true})
    dev:remove()
  end)

  it("reload a crypt device with another key, and back", function()
    local l = support.loops(1)
    local k1, k2 = dm.key.random(64), dm.key.random(64)
    local dev = support.device("spf-c", dm.crypt {l, key = k1})
    support.write(dev.path, 0, "under the first key")
    every_fault(function() return dev:reload(dm.crypt {l, key = k2}) end,
                function() dev:reload(dm.crypt {l, key = k1}) end)
    assert.equal("under the first key", support.read(dev.path, 0, 19))
  end)

  it("a stack with a LUKS member: apply and teardown; dm.luks open and close", function()
    local l = support.loops(1, "32MiB")
    local k = dm.key.random(32)
    dm.luks.format(l, {passphrase = k, pbkdf = {type = "pbkdf2", iterations = 1000}})
    local vault = dm.luks.open(l, "spf-open", {passphrase = k})
    support.write(vault.path, 0, "sealed")
    dm.luks.close(vault)
    every_fault(function() return dm.luks.open(l, "spf-open", {passphrase = k}) end,
                function() dm.luks.close("spf-open") end,
                {check = function(d) assert.equal("sealed", support.read(d.path, 0, 6)) end})
    local s = dm.stack {prefix = "spf", vault = dm.luks {l, passphrase = k}, top = dm.linear("vault", {length = 8})}
    local f = every_fault(function() return s:apply() end, function(st) st:teardown() end,
                          {check = function() assert.equal("sealed", support.read("/dev/mapper/spf-top", 0, 6)) end})
    assert.is_true(f >= 2)
    s:apply()
    every_fault(function() s:teardown() end, function() s:apply() end, {resumable = true})
  end)

  it("snapshot take and release", function()
    local l1, l3 = support.loops(2, "4MiB")
    local base = support.device("spf-base", dm.crypt {l1, key = dm.key.random(32), cipher = "aes-cbc-essiv:sha256"})
    support.write(base.path, 0, "taken")
    every_fault(function() return dm.snapshot.take(base, {cow = l3}) end, function(s) s:release() end,
                {check = function(s) assert.equal("taken", support.read(s.view.path, 0, 5)) end})
    local snap = dm.snapshot.take(base, {cow = l3})
    every_fault(function() snap:release() end, function() snap = dm.snapshot.take(base, {cow = l3}) end,
                {resumable = true})
    snap:release()
  end)

  it("overlay: make, discard, commit (the data merged)", function()
    local l1, l3 = support.loops(2, "4MiB")
    local base = support.device("spf-base", dm.linear(l1))
    support.write(base.path, 0, "old")
    every_fault(function() return dm.snapshot.overlay(base, {cow = l3}) end, function(ov) ov:discard() end)
    local ov, n = nil, 0
    local function make()
      ov, n = dm.snapshot.overlay(base, {cow = l3}), n + 1
      support.write(ov.view.path, 0, ("new%03d"):format(n))
    end
    make()
    every_fault(function() ov:discard() end, make, {resumable = true})
    every_fault(function() ov:commit() return n end, make, {resumable = true,
      check = function(m) assert.equal(("new%03d"):format(m), support.read(base.path, 0, 6)) end})
    ov:discard()
  end)

  it("volatile in place: make, discard, commit", function()
    local l1, l3 = support.loops(2, "4MiB")
    local base = support.device("spf-base", dm.linear(l1))
    support.write(base.path, 0, "kept")
    every_fault(function() return dm.snapshot.volatile(base, {cow = l3}) end, function(ov) ov:discard() end)
    local ov, n = nil, 0
    local function make()
      ov, n = dm.snapshot.volatile(base, {cow = l3}), n + 1
      support.write(base.path, 0, ("new%03d"):format(n))
    end
    make()
    every_fault(function() ov:discard() end, make, {resumable = true,
      check = function() assert.equal("kept", support.read(base.path, 0, 4)) end})
    every_fault(function() ov:commit() return n end, make, {resumable = true,
      check = function(m) assert.equal(("new%03d"):format(m), support.read(base.path, 0, 6)) end})
    ov:discard()
  end)

  it("thin: a volume, a snapshot of it, a thin stack", function()
    local m, d = support.loops(2, "8MiB")
    local pool = dm.thin.pool {name = "spf-pool", metadata = m, data = d}
    support.defer(function() pcall(pool.remove, pool) end)
    local vol
    every_fault(function() return pool:volume("spf-vol", "4MiB") end, function(v) v:delete() end)
    vol = pool:volume("spf-vol", "4MiB")
    support.write(vol.path, 0, "origin")
    every_fault(function() return vol:snapshot("spf-snap") end, function(sn) sn:delete() end,
                {check = function(sn) assert.equal("origin", support.read(sn.path, 0, 6)) end})
    vol:delete()
    pool:remove()
    local s = dm.stack {prefix = "spf", pool = dm.thin_pool {metadata = m, data = d},
                        vol = dm.thin {"pool", id = 3, length = "4MiB"}}
    every_fault(function() return s:apply() end, function(st) st:teardown() end)
    s:apply()
    every_fault(function() s:teardown() end, function() s:apply() end, {resumable = true})
    s:teardown()
  end)

  it("stack apply, re-apply with changes, teardown", function()
    local l1, l2 = support.loops(2, "4MiB")
    local function def(key, off)
      return dm.stack {prefix = "spf", base = dm.table {dm.linear(l1), dm.linear(l2)},
                       secret = dm.crypt {"base", key = key, length = 4096},
                       top = dm.linear("secret", {offset = off, length = 1024})}
    end
    local k1, k2 = dm.key.random(64), dm.key.random(64)
    local s1, s2 = def(k1, 8), def(k2, 16)
    every_fault(function() return s1:apply() end, function(s) s:teardown() end)
    s1:apply()
    every_fault(function() return s2:apply() end, function() s1:apply() end)
    every_fault(function() s1:teardown() end, function() s1:apply() end, {resumable = true})
    s1:teardown()
  end)

  it("scope close: what is left is listed, and retry finishes it", function()
    local l = support.loops(1)
    local k = dm.key.random(64)
    local before = state()
    local n = count_ops(function()
      local s = dm.scope()
      local base = dm.create("spf-base", dm.linear(l))
      dm.create("spf-secret", dm.crypt {base, key = k})
      s:close()
    end)
    for at = 1, n do
      local s = dm.scope()
      local ok, err = pcall(function()
        fail_at(at)
        local base = dm.create("spf-base", dm.linear(l))
        dm.create("spf-secret", dm.crypt {base, key = k})
        s:close()
      end)
      dm.kernel.fault = nil
      support.none_suspended()
      if not ok then
        -- a failed close reports what is left, and retry finishes it; a
        -- failed make leaves the scope open with what was made
        if err.retry then err.retry() else s:close() end
      end
      if not support.same(before.rings, state().rings) then dm.cleanup("spf") end
      assert.same(before, state(), ("after fault %d"):format(at))
    end
  end)
end)
