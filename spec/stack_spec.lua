-- Declarative stacks: members, dependency order, plans (without a kernel, in a
-- dry run), then apply/teardown/cleanup on the real kernel, with faults and a
-- script killed in the middle.
local dm = require "devmapper"
local core = require "devmapper.core"
local support = require "spec.support"
local dry, changing, fail_nth, world, none_suspended =
  support.dry, support.changing, support.fail_nth, support.world, support.none_suspended
after_each(support.cleanup)

local function refused(f, pattern)
  local ok, err = pcall(f)
  assert.is_false(ok)
  assert.equal("table", type(err))
  assert.matches(pattern, tostring(err), 1, true)
  return err
end

describe("stack", function()
  it("refuses malformed stacks", function()
    refused(function() dm.stack {prefix = "a-b", x = dm.zero(8)} end, "field 'prefix' must be 1 to 64 letters, digits or '_'")
    refused(function() dm.stack {prefix = "", x = dm.zero(8)} end, "field 'prefix'")
    refused(function() dm.stack {x = dm.zero(8)} end, "field 'prefix'")
    refused(function() dm.stack {prefix = "p"} end, "a stack needs at least one member")
    refused(function() dm.stack {prefix = "p", dm.zero(8)} end, "members must be named (name = table), got a number key")
    refused(function() dm.stack {prefix = "p", x = 42} end, "field 'table' must be a table, a target or dmsetup table text")
    refused(function() dm.stack {prefix = "p", top = dm.linear("bsae")} end,
            "stack 'p-top': segment 1 (linear) names 'bsae', which is not a member")
    refused(function() dm.stack {prefix = "p", a = dm.linear("b"), b = dm.linear("c"), c = dm.linear("a")} end,
            "members name each other in a cycle: a -> b -> c -> a")
    refused(function() dm.stack {prefix = "p", a = dm.linear("a")} end, "cycle: a -> a")
    refused(function() dm.stack {prefix = "p", [("m"):rep(126)] = dm.zero(8)} end, "must be 1 to 127 bytes long")
    refused(function() dm.cleanup("") end, "field 'prefix'")
  end)

  it("orders members after those they name, ties by name", function()
    local s = dm.stack {prefix = "p", top = dm.linear("mid"), mid = dm.striped {chunk = 8, "base", "other"},
                        base = dm.zero(64), other = dm.zero(64), alone = dm.zero(8)}
    assert.same({"alone", "base", "other", "mid", "top"}, s.order)
    assert.equal("p-mid", s:name("mid"))
    assert.equal("DMLUA-p-mid", dm.stack.uuid("p", "mid"))
  end)

  it("plans dmsetup commands, members named by their device paths (dry run)", function()
    local plan
    dry(function()
      local l1 = dm.loop.create("/tmp/dry-stack1", "2MiB")
      local l2 = dm.loop.create("/tmp/dry-stack2", "1MiB")
      local l3 = dm.loop.create("/tmp/dry-stack3", "1MiB")
      local s = dm.stack {prefix = "dryplan", base = dm.table {dm.linear(l1), dm.linear(l2)},
                          top = dm.linear("base", {offset = 2048}),
                          snap = dm.snapshot {origin = "base", cow = l3, chunk = 16},
                          live = dm.snapshot {origin = "base", cow = l3, persistent = false}}
      plan = s:plan()
      plan.text = tostring(plan):gsub("7:%d+", "7:x"):gsub("/dev/loop%d+%?", "/dev/loopX")
    end)
    assert.same({"base", "live", "snap", "top"}, {plan[1].member, plan[2].member, plan[3].member, plan[4].member})
    for _, p in ipairs(plan) do assert.equal("create", p.op) end
    assert.equal(table.concat({
      "dmsetup create dryplan-base --uuid DMLUA-dryplan-base <<'EOF'",
      "0 4096 linear 7:x 0",
      "4096 2048 linear 7:x 0",
      "EOF",
      "dmsetup create dryplan-live --uuid DMLUA-dryplan-live --table '0 6144 snapshot /dev/mapper/dryplan-base 7:x N 8'",
      "dd if=/dev/zero of=/dev/loopX bs=512 count=16 conv=notrunc",
      "dmsetup create dryplan-snap --uuid DMLUA-dryplan-snap --table '0 6144 snapshot /dev/mapper/dryplan-base 7:x P 16'",
      "dmsetup create dryplan-top --uuid DMLUA-dryplan-top --table '0 4096 linear /dev/mapper/dryplan-base 2048'",
    }, "\n"), plan.text)
  end)

  it("applies in order, then plans nothing; a changed member is reloaded (dry run)", function()
    local first, second, third, plan
    first = dry(function()
      local l1 = dm.loop.create("/tmp/dry-stack4", "2MiB")
      local s = dm.stack {prefix = "dryapply", base = dm.linear(l1), top = dm.linear("base", {length = 1024})}
      s:apply()
      second = dry(function() s:apply() end)
      plan = tostring(s:plan())
      s = dm.stack {prefix = "dryapply", base = dm.linear(l1), top = dm.linear("base", {length = 2048})}
      third = dry(function() s:apply() end)
      s:teardown()
    end)
    assert.matches("dmsetup create dryapply%-base .*dmsetup create dryapply%-top", first)
    assert.is_nil(second:find("create", 1, true))
    assert.is_nil(second:find("load", 1, true))
    assert.is_nil(second:find("suspend", 1, true))
    assert.is_nil(second:find("resume", 1, true))
    assert.equal("# dryapply-base: up to date\n# dryapply-top: up to date", plan)
    assert.matches("dmsetup load dryapply%-top %-%-table '0 2048 linear 253:%d+ 0'\ndmsetup suspend dryapply%-top\n"
                   .. "dmsetup resume dryapply%-top\n", third)
    assert.is_nil(third:find("load dryapply-base", 1, true))
    assert.matches("dmsetup remove %-%-retry dryapply%-top\n.*dmsetup remove %-%-retry dryapply%-base\n", first)
  end)

  it("refuses to adopt a device that is not its own (dry run)", function()
    dry(function()
      local d = dm.create("dryforeign-base", dm.zero(8))
      local s = dm.stack {prefix = "dryforeign", base = dm.zero(8)}
      refused(function() s:plan() end, "exists and is not part of stack 'dryforeign' (its uuid is nil, not DMLUA-dryforeign-base)")
      refused(function() s:apply() end, "apply 'dryforeign': step 'plan dryforeign-base' failed")
      assert.equal("foreign", s:status().base.state)
      d:remove()
    end)
  end)

  it("cleanup removes exactly what carries the prefix (dry run)", function()
    local removed, left
    dry(function()
      dm.stack {prefix = "drycl", a = dm.zero(8), b = dm.linear("a")}:apply()
      dm.stack {prefix = "drycl2", a = dm.zero(8)}:apply()
      dm.stack {prefix = "dry", a = dm.zero(8)}:apply()
      dm.create("drycl-lookalike", dm.zero(8))
      removed = dm.cleanup("drycl")
      left = {}
      for _, d in ipairs(dm.list()) do left[d.name] = true end
      dm.cleanup("drycl2")
      dm.cleanup("dry")
      dm.device("drycl-lookalike"):remove()
    end)
    assert.same({"drycl-a", "drycl-b"}, removed)
    assert.is_nil(left["drycl-a"])
    assert.is_true(left["drycl2-a"])
    assert.is_true(left["dry-a"])
    assert.is_true(left["drycl-lookalike"])
  end)

  it("reports each member's state (dry run)", function()
    dry(function()
      local s = dm.stack {prefix = "drystat", a = dm.zero(8), b = dm.linear("a")}
      local st = s:status()
      assert.equal("missing", st.a.state)
      assert.equal("missing", st[2].state)
      s:apply()
      st = s:status()
      assert.equal("current", st.b.state)
      assert.equal("drystat-a: current\ndrystat-b: current", tostring(st))
      s:teardown()
    end)
  end)
end)

-- A three-level stack over two loops: base, a snapshot of it, and a top;
-- `changed` gives base and top other tables of the same size.
local function sample(prefix, l1, l2, l3, changed)
  return dm.stack {prefix = prefix,
                   base = changed and dm.table {dm.linear(l1), dm.linear(l2, {length = 2048}), dm.zero(2048)}
                          or dm.table {dm.linear(l1), dm.linear(l2)},
                   snap = dm.snapshot {origin = "base", cow = l3},
                   top = dm.linear("snap", {offset = changed and 64 or 8, length = 1024})}
end

describe("stack #kernel", function()
  it("applies members in dependency order, with their UUIDs, as dmsetup sees them", function()
    local l1, l2, l3 = support.loops(3)
    local s = sample("spst", l1, l2, l3)
    support.defer(function() pcall(s.teardown, s) end)
    s:apply()
    assert.same({"spst-base", "spst-snap", "spst-top"}, support.names())
    local base, snap = s:device("base"), s:device("snap")
    assert.equal(("0 4096 linear %s 0\n4096 4096 linear %s 0"):format(l1:devno(), l2:devno()),
                 support.dmsetup("table spst-base"))
    assert.equal(("0 8192 snapshot %s %s P 8"):format(base:devno(), l3:devno()), support.dmsetup("table spst-snap"))
    assert.equal(("0 1024 linear %s 8"):format(snap:devno()), support.dmsetup("table spst-top"))
    for _, m in ipairs {"base", "snap", "top"} do
      assert.equal("DMLUA-spst-" .. m, s:device(m):info().uuid)
      assert.equal("DMLUA-spst-" .. m, support.dmsetup("info -c --noheadings -o uuid spst-" .. m))
    end
    local st = s:status()
    assert.equal("current", st.snap.state)
    assert.equal("snapshot", st.snap.status[1].type)
    s:teardown()
    assert.same({}, support.names())
  end)

  it("a second apply makes no state-changing ioctl; a changed member is reloaded in place", function()
    local l1, l2, l3 = support.loops(3)
    local s = sample("spst", l1, l2, l3)
    support.defer(function() pcall(s.teardown, s) end)
    s:apply()
    local devno = s:device("top"):devno()
    local n = changing()
    s:apply()
    assert.equal(0, changing() - n)
    s = dm.stack {prefix = "spst", base = s.members.base, snap = s.members.snap,
                  top = dm.linear("snap", {offset = 16, length = 2048})}
    assert.same({"keep", "keep", "reload"}, {s:plan()[1].op, s:plan()[2].op, s:plan()[3].op})
    n = changing()
    s:apply()
    assert.equal(3, changing() - n) -- load, suspend, resume
    assert.equal(devno, s:device("top"):devno())
    assert.equal(("0 2048 linear %s 16"):format(s:device("snap"):devno()), support.dmsetup("table spst-top"))
    none_suspended()
  end)

  it("a re-made stack with the same crypt key applies as a no-op; a new key replaces the old in the keyring", function()
    local l1 = support.loops(1)
    local hex = dm.key.random(64):hex() -- the same key in every run of a script
    local function def(k)
      return dm.stack {prefix = "spkr", secret = dm.crypt {l1, key = k}, top = dm.linear("secret", {length = 8})}
    end
    local s = def(dm.key.from_hex(hex))
    support.defer(function() pcall(s.teardown, s) end)
    s:apply()
    local desc = support.dmsetup("table spkr-secret"):match(":64:logon:(devmapper:%x+)")
    local n = changing()
    s = def(dm.key.from_hex(hex))
    assert.equal("keep", s:plan()[1].op)
    s:apply()
    assert.equal(0, changing() - n)
    s = def(dm.key.random(64))
    s:apply()
    local new = support.dmsetup("table spkr-secret"):match(":64:logon:(devmapper:%x+)")
    assert.not_equal(desc, new)
    local _, old_code = support.sh("keyctl search @u logon " .. desc)
    local _, new_code = support.sh("keyctl search @u logon " .. new)
    assert.not_equal(0, old_code, "the old key left the keyring")
    assert.equal(0, new_code)
  end)

  it("resumes a suspended member, and teardown resumes before removing", function()
    local l1, l2, l3 = support.loops(3)
    local s = sample("spst", l1, l2, l3)
    support.defer(function() pcall(s.teardown, s) end)
    s:apply()
    s:device("top"):suspend()
    assert.equal("resume", s:plan()[3].op)
    s:apply()
    assert.is_false(s:device("top"):info().suspended)
    s:device("top"):suspend()
    s:device("base"):suspend()
    s:teardown()
    assert.same({}, support.names())
  end)

  it("teardown refuses to pull a member from under a device that is not its own", function()
    local l1, l2, l3 = support.loops(3)
    local s = sample("spst", l1, l2, l3)
    support.defer(function() pcall(s.teardown, s) end)
    s:apply()
    local outsider = support.device("spec-outsider", dm.linear("/dev/mapper/spst-top"))
    local ok, err = pcall(s.teardown, s)
    assert.is_false(ok)
    assert.equal(16, err.errno) -- EBUSY
    assert.matches("^teardown 'spst': 3 of 3 devices left: spst%-top %(held by /dev/mapper/spec%-outsider%); "
                   .. "spst%-snap %(held by /dev/mapper/spst%-top%)", tostring(err))
    assert.same({"spst-top", "spst-snap", "spst-base"}, err.left)
    assert.same({"spec-outsider", "spst-base", "spst-snap", "spst-top"}, support.names())
    outsider:remove()
    err.retry() -- tries what was left again
    assert.same({}, support.names())
  end)

  it("rolls back at every step of apply, fresh and reloading", function()
    local l1, l2, l3 = support.loops(3)
    local other = support.device("spec-other", dm.linear(l1, {length = 8}))
    local s = sample("spst", l1, l2, l3)
    support.defer(function() dm.kernel.fault = nil; pcall(s.teardown, s) end)
    local before = world()
    local steps = {}
    for n = 1, 10 do
      fail_nth(n)
      local ok, err = pcall(s.apply, s)
      dm.kernel.fault = nil
      if ok then break end
      assert.equal("apply", err.op)
      assert.matches("step '[^']+' failed: .*injected fault", tostring(err))
      steps[#steps + 1] = err.step
      none_suspended()
      assert.same(before, world())
    end
    assert.same({"create spst-base", "create spst-snap", "create spst-top"}, steps)

    -- change two members: each failure puts back the tables that were live
    local applied = world()
    s = sample("spst", l1, l2, l3, true)
    steps = {}
    for n = 1, 20 do
      fail_nth(n)
      local ok, err = pcall(s.apply, s)
      dm.kernel.fault = nil
      if ok then break end
      steps[#steps + 1] = err.step
      none_suspended()
      assert.same(applied, world())
    end
    assert.same({"reload spst-base", "reload spst-base", "reload spst-base",
                 "reload spst-top", "reload spst-top", "reload spst-top"}, steps)
    assert.truthy(other:info())
  end)

  it("a rolled-back reload gives a hex-keyed crypt member its own key back", function()
    local l1 = support.loops(1, "4MiB")
    local key = dm.key.random(64)
    local function def(changed)
      return dm.stack {prefix = "spkey",
                       secret = dm.crypt {l1, key = key, keyring = false, options = changed and {"allow_discards"} or {}},
                       top = dm.linear("secret", {offset = changed and 64 or 8, length = 1024})}
    end
    local s = def(false)
    support.defer(function() dm.kernel.fault = nil; pcall(s.teardown, s) end)
    s:apply()
    support.write(s:device("top").path, 0, "through the right key")
    local applied = world()
    local steps = {}
    for n = 4, 6 do -- secret is reloaded in full, then top's load, suspend or resume fails
      fail_nth(n)
      local changed = def(true)
      local ok, err = pcall(changed.apply, changed)
      dm.kernel.fault = nil
      assert.is_false(ok)
      steps[#steps + 1] = err.step
      none_suspended()
      assert.same(applied, world())
      assert.is_true(support.table_holds_key("spkey-secret", key), "spkey-secret does not hold its key")
      assert.equal("through the right key", support.read(s:device("top").path, 0, 21))
    end
    assert.same({"reload spkey-top", "reload spkey-top", "reload spkey-top"}, steps)
  end)

  it("two scripts on the same prefix take turns; another prefix runs alongside", function()
    local dir = support.tmpdir()
    local l1 = support.loops(1, "4MiB")
    for _, p in ipairs {"spcc", "spcd"} do
      local f = assert(io.open(("%s/%s.lua"):format(dir, p), "w"))
      f:write(([[
        local dm = require "devmapper"
        local s = dm.stack {prefix = %q, a = dm.linear(%q, {length = 1024}), b = dm.linear("a"), c = dm.linear("b")}
        for _ = 1, 12 do s:apply(); s:teardown() end
        print("done")
      ]]):format(p, l1.path))
      f:close()
    end
    support.defer(function() pcall(dm.cleanup, "spcc"); pcall(dm.cleanup, "spcd") end)
    local out = support.sh(("build/dmlua %s/spcc.lua & a=$!; build/dmlua %s/spcc.lua & b=$!; build/dmlua %s/spcd.lua & c=$!; "
                            .. "s=0; wait $a || s=1; wait $b || s=1; wait $c || s=1; echo status $s"):format(dir, dir, dir))
    assert.matches("status 0", out, 1, true)
    local _, n = out:gsub("done", "")
    assert.equal(3, n, out)
    assert.same({}, support.names())
  end)

  it("is undone when a dm.scope closes", function()
    local l1, l2, l3 = support.loops(3)
    do
      local scope <close> = dm.scope()
      sample("spst", l1, l2, l3):apply()
      assert.equal(3, #support.names())
    end
    assert.same({}, support.names())
  end)

  it("dm.cleanup removes what a script killed with SIGKILL during apply left, keys included, and nothing else", function()
    local dir = support.tmpdir()
    local l1, l2 = support.loops(2, "4MiB")
    -- bystanders: a device, a crypt device with its keyring entry, a look-alike uuid
    local other = support.device("spec-other", dm.linear(l1, {length = 8}))
    local kb = dm.key.random(64)
    local secret = support.device("spec-secret", dm.crypt {l2, key = kb})
    local secret_ring = core.ring_keys("devmapper:dev:spec-secret")
    local lookalike = support.device("crash-lookalike", dm.zero(8), {uuid = "DMLUA-crashed-x"})
    local key = dm.key.from_hex(("c3"):rep(64))
    local desc = "devmapper:" .. core.key_fingerprint(key)
    local script = dir .. "/crash.lua"
    local f = assert(io.open(script, "w"))
    f:write(([[
      local dm = require "devmapper"
      local s = dm.stack {prefix = "crash", a = dm.linear(%q, {length = 2048}), b = dm.linear("a"),
                          k = dm.crypt {"b", key = dm.key.from_hex(("c3"):rep(64))},
                          c = dm.linear("k"), d = dm.linear("c", {length = 1024}), e = dm.linear("d"),
                          f = dm.striped {chunk = 8, "e", "c", length = 2048}}
      while true do s:apply(); s:teardown() end
    ]]):format(l1.path))
    f:close()
    support.defer(function() pcall(dm.cleanup, "crash") end)
    -- killed between create and the first load: no table, no block device yet
    dm.kernel.call("dm_create", "crash-bare", {}, {uuid = "DMLUA-crash-bare"})
    -- killed between linking a key and creating the device: a ring with no device
    core.ring_add("devmapper:dev:crash-k", desc, key)
    assert.same({"crash-bare"}, dm.cleanup("crash"))
    assert.is_nil(core.ring_keys("devmapper:dev:crash-k"))
    local seen = 0
    for _ = 1, 30 do
      local delay = 0.2 + math.random() * 1.3
      local out = support.sh(("{ build/dmlua %s & pid=$!; sleep %.2f; kill -9 $pid; wait $pid; echo killed; }")
                             :format(script, delay))
      assert.matches("killed", out)
      seen = seen + #dm.cleanup("crash")
      for _, d in ipairs(dm.list()) do
        local uuid = dm.device(d.name):info().uuid or ""
        assert.is_nil(uuid:match("^DMLUA%-crash%-"), d.name .. " is left")
      end
      assert.same({}, core.rings("devmapper:dev:crash-"))
      local _, found = support.sh("keyctl search @u logon " .. desc)
      assert.not_equal(0, found, "the stack's key is left in the keyring")
      none_suspended()
      assert.equal(("0 8 linear %s 0"):format(l1:devno()), support.text(other:table()))
      assert.equal("0 8 zero", support.text(lookalike:table()))
      assert.same(secret_ring, core.ring_keys("devmapper:dev:spec-secret"))
    end
    assert.same({"crash-lookalike", "spec-other", "spec-secret"}, support.names())
    assert.is_true(seen > 0, "no kill landed while the stack existed")
    assert.truthy(secret:info())
  end)
end)
