-- Rings: a keyring per device in @u holding links to its logon keys
-- (core.ring_*), with keyctl as the oracle; dm-crypt finding a key that is
-- linked only inside a ring (#kernel).
local dm = require "devmapper"
local core = require "devmapper.core"
local support = require "spec.support"
after_each(support.cleanup)

local function fresh(what) return ("devmapper:%s-%d"):format(what, math.random(1e9)) end

-- A ring dropped after the test, whatever the test did to it.
local function ring(what)
  local r = fresh("dev:" .. what)
  support.defer(function() pcall(core.ring_drop, r) end)
  return r
end

-- The serial keyctl finds for a key (searching @u and the keyrings in it), or nil.
local function serial(type, desc)
  local out, code = support.sh(("keyctl search @u %s %s"):format(type, desc))
  return code == 0 and tonumber(out:match("^(%d+)")) or nil
end

-- The serials linked directly in a keyring.
local function rlist(id)
  local t = {}
  for n in support.sh("keyctl rlist " .. id):gmatch("%d+") do t[#t + 1] = tonumber(n) end
  return t
end

-- Keys linked in thread keyrings ("_tid" in /proc/keys; in these runs only
-- this process makes one).
local function thread_held()
  local n = 0
  for line in io.lines("/proc/keys") do
    local c = line:match(" keyring%s+_tid: (%d+)$")
    if c then n = n + tonumber(c) end
  end
  return n
end

local function has(list, x)
  for _, v in ipairs(list) do if v == x then return true end end
  return false
end

describe("rings #keyring", function()
  it("adds a logon key into a ring it makes in @u, and lists it", function()
    local r, k = ring("add"), dm.key.random(64)
    assert.is_nil(core.ring_keys(r))
    assert.equal(":64:logon:devmapper:ka", core.ring_add(r, "devmapper:ka", k))
    local rid, kid = serial("keyring", r), serial("logon", "devmapper:ka")
    assert.truthy(rid, "keyctl finds the ring")
    assert.truthy(kid, "keyctl finds the key")
    assert.is_true(has(rlist("@u"), rid), "the ring is linked in @u")
    assert.is_false(has(rlist("@u"), kid), "the key is not linked in @u itself")
    assert.same({kid}, rlist(rid))
    assert.same({"devmapper:ka"}, core.ring_keys(r))
    assert.is_true(has(core.rings("devmapper:dev:"), r))
  end)

  it("replaces a key added again, and never replaces an existing ring", function()
    local r = ring("again")
    core.ring_add(r, "devmapper:kb", dm.key.random(32))
    core.ring_release()
    local rid, kid = serial("keyring", r), serial("logon", "devmapper:kb")
    assert.equal(":32:logon:devmapper:kb", core.ring_add(r, "devmapper:kb", dm.key.random(32)))
    assert.equal(":16:logon:devmapper:kc", core.ring_add(r, "devmapper:kc", dm.key.random(16)))
    core.ring_release()
    assert.equal(rid, serial("keyring", r), "the same ring")
    assert.truthy(serial("logon", "devmapper:kb"), "the key is there")
    assert.is_false(has(rlist(rid), kid), "the first key's link was replaced")
    assert.same({"devmapper:kb", "devmapper:kc"}, core.ring_keys(r))
    assert.equal(2, #rlist(rid))
  end)

  it("holds a key in the thread keyring only until a task runs or ring_release", function()
    local r, desc = ring("held"), fresh("held")
    core.ring_add(r, desc, dm.key.random(32))
    assert.equal(1, thread_held(), "this thread's keyring links it")
    core.ring_release()
    assert.equal(0, thread_held())
    assert.truthy(serial("logon", desc), "the ring still holds it")
    -- listing and unlinking link the ring in the thread keyring only for the call
    assert.same({desc}, core.ring_keys(r))
    assert.is_true(core.ring_unlink(r, desc))
    assert.same({}, core.ring_keys(r))
    assert.equal(0, thread_held())
    for line in io.lines("/proc/keys") do
      assert.is_nil(line:match(" keyring%s+_tid: [1-9]"), "a thread keyring still links something: " .. line)
    end
  end)

  it("links a key reachable from @u into a second ring; dropping one ring leaves the other's key", function()
    local a, b = ring("a"), ring("b")
    core.ring_add(a, "devmapper:shared", dm.key.random(64))
    local kid = serial("logon", "devmapper:shared")
    assert.is_true(core.ring_link(b, "devmapper:shared"))
    assert.is_true(core.ring_link(b, "devmapper:shared"), "linking again is a no-op")
    assert.same({kid}, rlist(serial("keyring", b)))
    assert.same({"devmapper:shared"}, core.ring_keys(b))
    assert.is_true(core.ring_drop(a))
    assert.is_nil(core.ring_keys(a))
    assert.is_nil(serial("keyring", a), "ring a is gone")
    assert.equal(kid, serial("logon", "devmapper:shared"), "b still holds the key")
    assert.same({"devmapper:shared"}, core.ring_keys(b))
    assert.is_true(core.ring_drop(b))
    assert.is_nil(serial("logon", "devmapper:shared"), "with both rings gone, so is the key")
    assert.is_false(core.ring_drop(b))
  end)

  it("answers false to linking a missing key, and makes no ring for it", function()
    local r = ring("nokey")
    assert.is_false(core.ring_link(r, fresh("missing")))
    assert.is_nil(core.ring_keys(r))
    assert.is_false(has(core.rings("devmapper:dev:"), r))
  end)

  it("unlinks a key from one ring only; false when the ring or the key is not there", function()
    local a, b = ring("ua"), ring("ub")
    assert.is_false(core.ring_unlink(a, "devmapper:ku"), "no ring")
    core.ring_add(a, "devmapper:ku", dm.key.random(32))
    core.ring_add(a, "devmapper:kv", dm.key.random(32))
    core.ring_link(b, "devmapper:ku")
    assert.is_false(core.ring_unlink(b, "devmapper:kv"), "not in that ring")
    assert.is_true(core.ring_unlink(a, "devmapper:ku"))
    assert.is_false(core.ring_unlink(a, "devmapper:ku"))
    assert.same({"devmapper:kv"}, core.ring_keys(a))
    assert.same({"devmapper:ku"}, core.ring_keys(b))
    assert.truthy(serial("logon", "devmapper:ku"), "b's link keeps the key")
    assert.is_true(core.ring_unlink(b, "devmapper:ku"))
    assert.same({}, core.ring_keys(b), "an empty ring is still a ring")
  end)

  it("lists only logon keys, sorted", function()
    local r = ring("sorted")
    for _, d in ipairs {"devmapper:z", "devmapper:a", "devmapper:m"} do core.ring_add(r, d, dm.key.random(16)) end
    local _, code = support.sh(("keyctl add user devmapper:user-key data %%:%s"):format(r))
    assert.equal(0, code)
    assert.same({"devmapper:a", "devmapper:m", "devmapper:z"}, core.ring_keys(r))
  end)

  it("drops a ring: its keys are cleared and it leaves @u", function()
    local r = ring("drop")
    core.ring_add(r, "devmapper:kd", dm.key.random(64))
    local rid = serial("keyring", r)
    assert.is_true(core.ring_drop(r))
    assert.is_false(has(rlist("@u"), rid))
    assert.is_nil(serial("logon", "devmapper:kd"))
    assert.is_false(has(core.rings("devmapper:"), r))
    assert.is_false(core.ring_drop(r))
  end)

  it("lists the rings in @u by prefix, sorted", function()
    local tag = ("devmapper:dev:list%d-"):format(math.random(1e9))
    for _, s in ipairs {"c", "a", "b"} do
      support.defer(function() pcall(core.ring_drop, tag .. s) end)
      core.ring_add(tag .. s, "devmapper:kl", dm.key.random(16))
    end
    assert.same({tag .. "a", tag .. "b", tag .. "c"}, core.rings(tag))
    assert.same({}, core.rings(tag .. "none"))
  end)

  it("refuses bad descriptions with a clear error, before the kernel", function()
    local k = dm.key.random(32)
    local bad = {"user:foo", "devmapper:", "devmapper:with space", "devmapper:x\n", "logon:devmapper:x",
                 "devmapper:\127", "devmapper:" .. ("x"):rep(4086)}
    local function refused(f, what)
      local ok, err = pcall(f)
      assert.is_false(ok)
      assert.equal(22, err.errno)
      assert.matches("^ring%.%a+$", err.op)
      assert.matches("the " .. what .. " must be \"devmapper:\" and then printable characters", err.message, 1, true)
    end
    for _, d in ipairs(bad) do
      refused(function() dm.kernel.call("ring_add", d, "devmapper:ok", k) end, "keyring name")
      refused(function() dm.kernel.call("ring_add", "devmapper:dev:ok", d, k) end, "key description")
      refused(function() dm.kernel.call("ring_link", d, "devmapper:ok") end, "keyring name")
      refused(function() dm.kernel.call("ring_link", "devmapper:dev:ok", d) end, "key description")
      refused(function() dm.kernel.call("ring_unlink", d, "devmapper:ok") end, "keyring name")
      refused(function() dm.kernel.call("ring_unlink", "devmapper:dev:ok", d) end, "key description")
      refused(function() dm.kernel.call("ring_keys", d) end, "keyring name")
      refused(function() dm.kernel.call("ring_drop", d) end, "keyring name")
    end
    local ok, err = pcall(core.ring_keys, 42)
    assert.is_false(ok)
    assert.equal("ring.keys: the keyring name must be a string, got number (Invalid argument)", tostring(err))
    ok, err = pcall(core.ring_add, "user:x\n", "devmapper:ok", k)
    assert.matches('got "user:x\\x0a" (7 bytes)', tostring(err), 1, true)
    assert.is_nil(serial("keyring", "devmapper:dev:ok"), "nothing was made")
  end)

  it("refuses a closed key, and never shows the bytes of one", function()
    local r, k = ring("closed"), dm.key.random(32)
    local hex = k:hex()
    k:close()
    local ok, err = pcall(core.ring_add, r, "devmapper:kc", k)
    assert.is_false(ok)
    assert.matches("the key is closed", tostring(err), 1, true)
    assert.is_nil(core.ring_keys(r), "no ring made for a refused key")
    k = dm.key.from_hex(hex)
    ok, err = pcall(core.ring_add, r, "devmapper:bad desc", k)
    assert.is_nil(tostring(err):find(hex, 1, true))
  end)

  it("reads in --trace and --dry-run as keyctl commands, with <key> for the bytes", function()
    local k = dm.key.random(64)
    local r = fresh("dev:dry")
    local text = support.dry(function()
      assert.equal(":64:logon:devmapper:kx", dm.kernel.call("ring_add", r, "devmapper:kx", k))
      assert.is_true(dm.kernel.call("ring_link", r .. "b", "devmapper:kx"))
      assert.is_false(dm.kernel.call("ring_link", r .. "b", "devmapper:none"))
      assert.same({"devmapper:kx"}, dm.kernel.call("ring_keys", r))
      assert.same({r, r .. "b"}, dm.kernel.call("rings", r))
      assert.is_true(dm.kernel.call("ring_unlink", r, "devmapper:kx"))
      assert.is_true(dm.kernel.call("ring_drop", r))
      assert.is_false(dm.kernel.call("ring_drop", r))
      assert.is_nil(dm.kernel.call("ring_keys", r))
    end)
    assert.is_nil(text:find(k:hex(), 1, true))
    assert.matches("keyctl padd logon devmapper:kx %:" .. r .. " <key>\n", text, 1, true)
    assert.matches("keyctl link %logon:devmapper:kx %:" .. r .. "b\n", text, 1, true)
    assert.matches("keyctl rlist %:" .. r .. "\n", text, 1, true)
    assert.matches("keyctl rlist @u\n", text, 1, true)
    assert.matches("keyctl unlink %logon:devmapper:kx %:" .. r .. "\n", text, 1, true)
    assert.matches("keyctl clear %:" .. r .. " && keyctl invalidate %:" .. r .. "\n", text, 1, true)
    assert.is_nil(serial("keyring", r), "a dry run touches no keyring")
  end)
end)

describe("rings and dm-crypt #kernel", function()
  local function drop_caches() assert(os.execute("sync; echo 3 > /proc/sys/vm/drop_caches")) end

  it("a create or load lets go of this thread's link to its keys once its task ran, or failed", function()
    local l = support.loops(1, "2MiB")
    local k = dm.key.random(64)
    local desc = require("devmapper.target").key_desc(k)
    local dev = support.device("heldcrypt", dm.crypt {l, key = k, length = 8})
    assert.equal(0, thread_held(), "after a create")
    assert.truthy(serial("logon", desc), "the device's ring holds the key")
    dev:load(dm.crypt {l, key = k, length = 16})
    assert.equal(0, thread_held(), "after a load")
    dev:clear()
    -- a load stopped before its task ran (a fault) takes back what it linked
    local k2 = dm.key.random(64)
    dm.kernel.fault = function(op) return op == "dm_load" end
    assert.has_error(function() dev:load(dm.crypt {l, key = k2, length = 8}) end)
    dm.kernel.fault = nil
    assert.equal(0, thread_held(), "after a faulted load")
    assert.is_nil(serial("logon", require("devmapper.target").key_desc(k2)))
    -- a create failing before or after its load leaves no key, no link and no device
    for _, op in ipairs {"dm_load", "dm_resume"} do
      local k3 = dm.key.random(32)
      dm.kernel.fault = function(o) return o == op end
      assert.has_error(function() dm.create("heldcrypt2", dm.crypt {l, key = k3, length = 8}) end)
      dm.kernel.fault = nil
      assert.equal(0, thread_held(), "after a create failed at " .. op)
      assert.is_nil(serial("logon", require("devmapper.target").key_desc(k3)))
      assert.is_nil(core.ring_keys("devmapper:dev:heldcrypt2"))
    end
    assert.is_nil(dm.kernel.call("dm_info", "heldcrypt2"), "no device is left")
    -- and when the removal after a failed load fails too, it says what is left
    local warned = {}
    local was = dm.kernel.warn
    dm.kernel.warn = function(m) warned[#warned + 1] = m end
    dm.kernel.fault = function(o) return o == "dm_load" or o == "dm_remove" end
    local ok, err = pcall(dm.create, "heldcrypt3", dm.crypt {l, key = dm.key.random(32), length = 8})
    dm.kernel.fault, dm.kernel.warn = nil, was
    assert.is_false(ok)
    assert.equal("load", err.op)
    assert.equal(1, #warned)
    assert.matches("heldcrypt3 is left without a table: removing it failed too", warned[1], 1, true)
    assert.is_false(dm.kernel.call("dm_info", "heldcrypt3").live_table)
    assert.is_nil(core.ring_keys("devmapper:dev:heldcrypt3"), "its keys were taken back all the same")
    dm.device("heldcrypt3"):remove()
  end)

  it("a crypt create takes the name first: a live device's ring is never touched, a stale ring is replaced", function()
    local l = support.loops(1, "2MiB")
    local k, other = dm.key.random(64), dm.key.random(64)
    local dev = support.device("namecrypt", dm.crypt {l, key = k, length = 8})
    local own = "devmapper:dev:namecrypt"
    local before = core.ring_keys(own)
    local ok, err = pcall(dm.create, "namecrypt", dm.crypt {l, key = other, length = 8, offset = 8})
    assert.is_false(ok)
    assert.equal(16, err.errno, tostring(err)) -- EBUSY (the name is taken), before any key was linked
    assert.same(before, core.ring_keys(own), "the live device's ring is as it was")
    assert.is_nil(serial("logon", require("devmapper.target").key_desc(other)), "the other key was never added")
    dev:remove()
    -- a ring left behind (a script killed between its keys and its create) is replaced
    core.ring_add(own, "devmapper:stale-key", dm.key.random(16))
    core.ring_release()
    local stale = serial("keyring", own)
    dev = support.device("namecrypt", dm.crypt {l, key = other, length = 8})
    assert.not_equal(stale, serial("keyring", own), "a new ring")
    assert.same({require("devmapper.target").key_desc(other)}, core.ring_keys(own))
    support.write(dev.path, 0, ("x"):rep(4096))
    assert.equal(("x"):rep(4096), support.read(dev.path, 0, 4096))
  end)

  it("finds a logon key linked only inside a ring in @u; the live device outlives the ring", function()
    local l = support.loops(1, "2MiB")
    local r, desc = ring("crypt"), fresh("crypt")
    local k = dm.key.random(64)
    local ref = core.ring_add(r, desc, k)
    local kid = serial("logon", desc)
    assert.truthy(kid, "keyctl finds the key under @u")
    assert.is_false(has(rlist("@u"), kid), "the key is not linked in @u itself")
    local name = ("ringcrypt%d"):format(math.random(1e6))
    local dev = support.device(name, ("0 4096 crypt aes-xts-plain64 %s 0 %s 0"):format(ref, l:devno()))
    assert.matches(ref, dev:table():__tostring(), 1, true)
    local data = ("ring-nested-key "):rep(256)
    support.write(dev.path, 4096, data)
    drop_caches()
    assert.equal(data, support.read(dev.path, 4096, #data))
    assert.not_equal(data, support.read(l.path, 4096, #data), "the loop holds ciphertext")

    -- creating the device linked the key into the device's own ring too
    local own = "devmapper:dev:" .. name
    assert.same({desc}, core.ring_keys(own))
    assert.is_true(core.ring_drop(r))
    assert.truthy(serial("logon", desc), "the device's ring still holds the key")
    assert.is_true(core.ring_drop(own))
    assert.is_nil(serial("logon", desc), "keyctl no longer finds the key")
    assert.is_nil(support.sh("keyctl show @u"):find(desc, 1, true), "keyctl show @u lists no such key")
    -- the live device keeps its own copy of the key
    local more = ("after-the-ring! "):rep(256)
    support.write(dev.path, 8192, more)
    drop_caches()
    assert.equal(data, support.read(dev.path, 4096, #data))
    assert.equal(more, support.read(dev.path, 8192, #more))
    -- and a new table needs the key again: the kernel no longer has it
    local ok, err = pcall(dm.create, name .. "b", ("0 4096 crypt aes-xts-plain64 %s 0 %s 0"):format(ref, l:devno()))
    assert.is_false(ok)
    assert.matches("Required key not available", tostring(err), 1, true)
    dev:remove()
  end)
end)
