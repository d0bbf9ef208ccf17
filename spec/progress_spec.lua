-- Progress of long work: key derivation (calibration, then the derivation),
-- LUKS key slots' PBKDF (libcryptsetup in a worker thread), a snapshot
-- merge; one callback shape, dm.progress as the default, dmlua's line.
local dm = require "devmapper"
local support = require "spec.support"
local refused = support.refused
after_each(support.cleanup)
after_each(function() dm.progress = nil end)

-- A callback that keeps the ticks, and what they must look like: each phase's
-- done never decreases, and each phase ends with one finished tick.
local function recorder()
  local ticks = {}
  return ticks, function(p) ticks[#ticks + 1] = p end
end

local function phases(ticks)
  local seen, last = {}, nil
  for i, p in ipairs(ticks) do
    assert.is_string(p.op)
    assert.is_string(p.phase)
    assert.equal("integer", math.type(p.done), "tick " .. i)
    assert.is_true(p.total == nil or math.type(p.total) == "integer")
    if last and last.phase == p.phase and not last.finished then
      assert.is_true(p.done >= last.done, ("tick %d: done went from %d to %d"):format(i, last.done, p.done))
    end
    if p.finished then seen[#seen + 1] = p.phase end
    last = p
  end
  assert.is_true(last.finished, "the last tick is finished")
  return seen
end

local function count(ticks, phase)
  local n = 0
  for _, p in ipairs(ticks) do if p.phase == phase and not p.finished then n = n + 1 end end
  return n
end

describe("progress", function()
  it("is nil by default; dm.progress takes a function or nil", function()
    assert.is_nil(dm.progress)
    local f = function() end
    dm.progress = f
    assert.equal(f, dm.progress)
    assert.equal(f, require("devmapper.progress").default)
    dm.progress = nil
    assert.is_nil(dm.progress)
    refused(function() dm.progress = true end, "dm.progress must be a function or nil")
    refused(function() dm.key.derive("pw", {iterations = 1000, progress = 1}) end,
            "field 'progress' must be a function, true or false")
  end)

  it("ticks key calibration with growing CPU time, then the derivation against the time asked", function()
    for _, kdf in ipairs {"pbkdf2", "scrypt"} do
      local ticks, cb = recorder()
      local k = dm.key.derive("pw", {kdf = kdf, time = 0.5, progress = cb})
      k:close()
      assert.same({"calibrate", "derive"}, phases(ticks))
      assert.is_true(count(ticks, "calibrate") >= 2, kdf .. ": calibration ticks")
      assert.is_true(count(ticks, "derive") >= 2, kdf .. ": derivation ticks")
      for _, p in ipairs(ticks) do
        assert.equal("key.derive", p.op)
        assert.equal("ms", p.unit)
        if p.phase == "calibrate" then assert.is_nil(p.total) else assert.equal(500, p.total) end
      end
      assert.matches(kdf, ticks[1].what)
    end
  end)

  it("uses dm.progress when the call gives none, and calls nothing with progress = false", function()
    local ticks, cb = recorder()
    dm.progress = cb
    dm.key.derive("pw", {time = 0.2}):close()
    assert.is_true(#ticks > 0)
    local n = #ticks
    dm.key.derive("pw", {time = 0.2, progress = false}):close()
    dm.key.derive("pw", {kdf = "scrypt", time = 0.2, progress = false}):close()
    assert.equal(n, #ticks)
    -- a fixed cost: the derivation ticks, its total not known
    local mine, own = recorder()
    dm.key.derive("pw", {iterations = 200000, progress = own}):close()
    assert.same({"derive"}, phases(mine))
    assert.is_nil(mine[1].total)
  end)

  it("a raising callback stops calibration or derivation, and its error reaches the caller", function()
    for _, phase in ipairs {"calibrate", "derive"} do
      local stop = {why = "stop in " .. phase}
      local ok, err = pcall(dm.key.derive, "pw", {time = 0.3, progress = function(p)
        if p.phase == phase then error(stop) end
      end})
      assert.is_false(ok)
      assert.equal(stop, err)
    end
    -- the same passphrase as a Key, which the callback closes mid-derivation: the worker had its own copy
    local pass = dm.key.random(16)
    local k = dm.key.derive(pass, {time = 0.3, salt = "s", progress = function(p)
      if p.phase == "derive" then pass:close() end
    end})
    assert.equal(64, #k)
  end)

  it("reads as one line", function()
    local line = require("devmapper.progress").line
    assert.equal("luks.format: derive (argon2id) 1.2 s", line {op = "luks.format", phase = "derive", what = "argon2id",
                                                             done = 1234, unit = "ms"})
    assert.equal("snapshot.commit: merge 1.0 MiB of 4.0 MiB (25%)",
                 line {op = "snapshot.commit", phase = "merge", done = 2048, total = 8192, unit = "sectors"})
  end)

  local function dmlua_stderr(code, tty)
    local dir = support.tmpdir()
    support.file(dir .. "/s.lua", code)
    local cmd = ("build/dmlua %s/s.lua >%s/out 2>%s/err"):format(dir, dir, dir)
    if tty then
      -- a pseudo-terminal for dmlua's stderr (util-linux script)
      cmd = ("script -qec %q /dev/null >%s/out 2>&1"):format(("build/dmlua %s/s.lua"):format(dir), dir)
    end
    os.execute(cmd)
    local f = assert(io.open(dir .. (tty and "/out" or "/err"), "rb"))
    local s = f:read("a")
    f:close()
    return s, not tty and support.sh("cat " .. dir .. "/out") or nil
  end

  it("dmlua draws one updating line on a terminal, and nothing on a pipe", function()
    local code = [[
      local dm = require "devmapper"
      io.stdout:write(tostring(dm.progress ~= nil), "\n")
      dm.key.derive("pw", {time = 0.5}):close()
    ]]
    local tty = dmlua_stderr(code, true)
    assert.matches("^true\r?\n", tty)
    assert.matches("\rkey.derive: calibrate (pbkdf2-sha256) ", tty, 1, true)
    assert.matches("\rkey%.derive: derive %(pbkdf2%-sha256%) %d+%.%d s of 0%.5 s %(%d+%%%)\27%[K", tty)
    assert.equal("\r\27[K", tty:sub(-4))   -- cleared at the end
    local err, out = dmlua_stderr(code, false)
    assert.equal("", err)
    assert.matches("^false", out)   -- no default on a pipe
    -- DMLUA_PROGRESS=0 turns it off on a terminal too
    local quiet = support.sh("DMLUA_PROGRESS=0 script -qec \"build/dmlua -e 'print(require(\\\"devmapper\\\").progress)'\" /dev/null")
    assert.matches("^nil", quiet)
    -- an error ends the drawn line before dmlua reports it
    tty = dmlua_stderr([[require("devmapper").progress {op = "x", phase = "y", done = 1, unit = "ms"}; error("boom")]], true)
    assert.matches("\rx: y 0.0 s\27[K\r\27[K", tty, 1, true)
    assert.matches("boom", tty, 1, true)
  end)
  -- a LUKS header on a plain file: libcryptsetup in the worker, no kernel needed
  local function luks_file()
    local path = support.tmpdir() .. "/luks.img"
    support.file(path, "")
    support.sh("truncate -s 16M " .. path)
    return path
  end

  it("a callback cannot reach libcryptsetup or libdevmapper, even through devmapper.core, while a LUKS call works", function()
    local core = require "devmapper.core"
    local path = luks_file()
    local seen, busy = {}, nil
    dm.luks.format(path, {passphrase = dm.key.random(16), version = 1, pbkdf = {type = "pbkdf2", time = 0.2},
                          progress = function(p)
      if p.done > 0 and not p.finished and #seen == 0 then
        busy = core.busy()
        for _, f in ipairs {"luks_info", "luks_is", "dm_list", "ring_keys"} do
          local ok, err = pcall(core[f], path)
          seen[#seen + 1] = not ok and tostring(err) or f .. " ran"
        end
      end
    end})
    assert.equal("luks.format", busy)
    assert.equal(4, #seen)
    for _, s in ipairs(seen) do assert.matches("busy %(luks.format runs in another thread%)", s) end
    assert.is_nil(core.busy())
    assert.is_true(dm.luks.info(path).version == 1)
  end)

  it("a slow callback gets 100 ms between its ticks, not a burst to catch up", function()
    local now, gaps, last = require("devmapper.core").monotonic, {}, nil
    dm.luks.format(luks_file(), {passphrase = dm.key.random(16), version = 1, pbkdf = {type = "pbkdf2", time = 0.3},
                                 progress = function(p)
      if p.finished then return end
      if last then gaps[#gaps + 1] = now() - last end
      require("devmapper.core").sleep(0.25)
      last = now()
    end})
    assert.is_true(#gaps >= 2, "ticks: " .. #gaps)
    for i, g in ipairs(gaps) do assert.is_true(g >= 0.08, ("gap %d: %.3f s"):format(i, g)) end
  end)

  it("a callback that closes the Key being derived (debug.getlocal) takes nothing from under the worker", function()
    local err, out = dmlua_stderr([[
      local dm = require "devmapper"
      local pass = dm.key.random(16)
      local ok, e = pcall(dm.key.derive, pass, {iterations = 3000000, salt = "s", progress = function(p)
        for level = 2, 4 do
          for i = 1, 12 do
            local _, v = debug.getlocal(level, i)
            if v ~= pass and getmetatable(v) and tostring(v):find("Key") then v:close() end
          end
        end
      end})
      print(ok, e)
    ]], false)
    assert.matches("^false\t.*closed", out)
    assert.equal("", err)
  end)

  it("a fingerprint asked of the Key being derived is not kept for the bytes it gets after", function()
    local err, out = dmlua_stderr([[
      local dm = require "devmapper"
      local core = require "devmapper.core"
      local pass = dm.key.random(16)
      local early
      local k = dm.key.derive(pass, {iterations = 3000000, salt = "s", progress = function(p)
        for level = 2, 4 do
          for i = 1, 12 do
            local _, v = debug.getlocal(level, i)
            if v ~= pass and getmetatable(v) and tostring(v):find("Key") then early = early or core.key_fingerprint(v) end
          end
        end
      end})
      local same = dm.key.from_hex(k:hex())
      print(early ~= nil, core.key_fingerprint(k) == core.key_fingerprint(same), early ~= core.key_fingerprint(k))
    ]], false)
    assert.equal("true\ttrue\ttrue\n", out)
    assert.equal("", err)
  end)
end)

describe("progress #kernel", function()
  local function passphrase(text)
    local path = support.tmpdir() .. "/pass"
    support.file(path, text)
    return dm.key.read(path)
  end

  -- keyring entries the process can see that name the volume's UUID (the
  -- kernel frees an unlinked key from a work queue: a moment later)
  local function keys_of(uuid)
    local n
    for _ = 1, 20 do
      local f = assert(io.open("/proc/keys"))
      local s = f:read("a")
      f:close()
      n = 0
      for line in s:gmatch("[^\n]+") do if line:find(uuid, 1, true) then n = n + 1 end end
      if n == 0 then return 0 end
      require("devmapper.core").sleep(0.1)
    end
    return n
  end

  it("ticks while libcryptsetup derives: format, open, add_key, change_key, remove_key", function()
    local l1 = support.loops(1, "32MiB")
    local pass, other = passphrase("first"), passphrase("second")
    local ticks, cb = recorder()
    local made = dm.luks.format(l1, {passphrase = pass, pbkdf = {type = "pbkdf2", time = 1}, progress = cb})
    assert.same({"derive"}, phases(ticks))
    assert.is_true(count(ticks, "derive") >= 5, "format ticks: " .. #ticks)
    assert.equal("luks.format", ticks[1].op)
    assert.equal("pbkdf2", ticks[1].what)
    assert.equal("ms", ticks[1].unit)
    assert.is_true(ticks[#ticks].done >= 1000)

    ticks, cb = recorder()
    local dev = dm.luks.open(l1, "spec-progress", {passphrase = pass, progress = cb})
    support.defer(function() pcall(dm.luks.close, "spec-progress") end)
    assert.same({"derive"}, phases(ticks))
    assert.is_true(count(ticks, "derive") >= 3, "open ticks: " .. #ticks)
    assert.equal("luks.open", ticks[1].op)
    assert.is_nil(ticks[1].total)
    assert.is_true(dev:info().exists)
    dm.luks.close(dev)

    for _, op in ipairs {"add_key", "change_key"} do
      ticks, cb = recorder()
      local new = op == "add_key" and other or passphrase("third")
      dm.luks[op](l1, {passphrase = op == "add_key" and pass or other, new = new,
                       pbkdf = {type = "argon2id", time = 0.5, memory = 32 * 1024}, progress = cb})
      assert.same({"derive"}, phases(ticks))
      assert.is_true(count(ticks, "derive") >= 3, op .. " ticks: " .. #ticks)
      assert.equal("luks." .. op, ticks[1].op)
      assert.equal("argon2id", ticks[1].what)
    end
    assert.equal(2, #dm.luks.info(l1).keyslots)
    ticks, cb = recorder()
    dm.luks.remove_key(l1, pass, {progress = cb})
    assert.same({"derive"}, phases(ticks))
    assert.equal(made.uuid, dm.luks.info(l1).uuid)
  end)

  it("a raising callback leaves no device, key slot or keyring entry, and its error reaches the caller", function()
    local l1 = support.loops(1, "32MiB")
    local pass, other = passphrase("first"), passphrase("second")
    local slow = {type = "pbkdf2", time = 0.5}
    local made = dm.luks.format(l1, {passphrase = pass, pbkdf = slow, progress = false})
    local stop = {why = "stop"}
    local ok, err = pcall(dm.luks.open, l1, "spec-progress", {passphrase = pass, progress = function(p)
      if p.done > 0 then error(stop) end
    end})
    assert.is_false(ok)
    assert.equal(stop, err)
    assert.same({}, support.names())
    assert.equal(0, keys_of(made.uuid))

    -- the module refuses to be called from the callback while libcryptsetup works
    ok, err = pcall(dm.luks.open, l1, "spec-progress", {passphrase = pass, progress = function() dm.list() end})
    assert.is_false(ok)
    assert.matches("busy %(luks.open runs in another thread%)", tostring(err))
    assert.same({}, support.names())
    assert.equal(0, keys_of(made.uuid))

    ok, err = pcall(dm.luks.add_key, l1, {passphrase = pass, new = other, pbkdf = slow, progress = function(p)
      if p.done > 0 then error(stop) end
    end})
    assert.equal(stop, err)
    assert.equal(1, #dm.luks.info(l1).keyslots)

    -- the volume opens as before; progress = false calls nothing, even with a default
    local called = 0
    dm.progress = function() called = called + 1 end
    local dev = dm.luks.open(l1, "spec-progress", {passphrase = pass, progress = false})
    support.defer(function() pcall(dm.luks.close, "spec-progress") end)
    dm.luks.close(dev)
    assert.equal(0, called)
    dm.luks.open(l1, "spec-progress", {passphrase = pass})
    dm.luks.close("spec-progress")
    assert.is_true(called > 0)
  end)

  -- one byte in every other 4 KiB block: chunks that merge one by one
  local function scatter(path, tag, bytes)
    local f = assert(io.open(path, "r+b"))
    for o = 0, bytes - 1, 8192 do
      f:seek("set", o)
      f:write(tag)
    end
    f:close()
    os.execute("sync")
  end

  -- An overlay of a linear base whose view has 8 MiB written with tag, to merge.
  local function overlay_with(tag)
    local l1, l3 = support.loops(2, "16MiB")
    local base = support.device("spec-base", dm.linear(l1))
    local ov = dm.snapshot.overlay(base, {cow = l3})
    support.defer(function() pcall(ov.discard, ov) end)
    scatter(ov.view.path, tag, 8 * 1024 * 1024)
    return base, ov
  end

  it("snapshot commit ticks with the sectors merged of those to merge", function()
    local base, ov = overlay_with("m")
    local ticks, cb = recorder()
    ov:commit {progress = cb}
    assert.same({"merge"}, phases(ticks))
    for _, p in ipairs(ticks) do
      assert.equal("snapshot.commit", p.op)
      assert.equal("sectors", p.unit)
      assert.equal(ticks[1].total, p.total)
    end
    assert.is_true(ticks[1].total > 0)
    assert.equal(ticks[#ticks].total, ticks[#ticks].done)
    assert.equal("m", support.read(base.path, 8192 * 100, 1))
    assert.same({"spec-base"}, support.names())
  end)

  it("a raising callback stops the commit's wait; the merge goes on and commit finishes it", function()
    local base, ov = overlay_with("n")
    local stop = {why = "stop"}
    local ok, err = pcall(ov.commit, ov, {progress = function() error(stop) end})
    assert.is_false(ok)
    assert.equal("wait for merge", err.step)
    assert.equal(stop, err.cause)
    support.none_suspended()
    local called = 0
    dm.progress = function() called = called + 1 end
    ov:commit {progress = false}
    assert.equal(0, called)
    assert.equal("n", support.read(base.path, 8192 * 100, 1))
    assert.same({"spec-base"}, support.names())
  end)
end)
