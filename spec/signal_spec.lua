-- Signals in dmlua: SIGINT, SIGTERM and SIGHUP become an error at the next
-- safe point (never inside a critical section), so scopes undo; the exit
-- status is 128 + the signal's number.
local core = require "devmapper.core"
local support = require "spec.support"
after_each(support.cleanup)

local signals = {INT = 2, TERM = 15, HUP = 1}

-- Lines every script starts with: where it works, its pid, a way to wait.
local prelude = [[
local core = require "devmapper.core"
local dir = arg[1]
local function pid() local f = io.open("/proc/self/stat") local n = f:read("n") f:close() return n end
local function ready() print("ready " .. pid()) io.stdout:flush() end
local function wait_for(name)
  while not io.open(dir .. "/" .. name) do core.sleep(0.01) end
end
local function spin() while true do end end
]]

-- Start dmlua on a script, signals at their defaults (whatever the shell
-- running busted ignores) unless env says otherwise; returns a handle once
-- the script said "ready".
local function start(body, args, env)
  local dir = support.tmpdir()
  local script = dir .. "/script.lua"
  local f = assert(io.open(script, "w"))
  f:write(prelude, body)
  f:close()
  local p = io.popen(("timeout -s KILL 120 env %s build/dmlua %s %s %s 2>&1")
                     :format(env or "--default-signal=INT,TERM,HUP", script, dir, table.concat(args or {}, " ")))
  local lines = {}
  repeat
    local line = p:read("l")
    lines[#lines + 1] = line
  until not line or line:match("^ready %d+$")
  local pid = lines[#lines] and lines[#lines]:match("^ready (%d+)$")
  assert(pid, "the script did not start: " .. table.concat(lines, "\n"))
  return {p = p, pid = pid, dir = dir}
end

local function kill(h, sig) assert(os.execute(("kill -%s %s"):format(sig, h.pid))) end

local function touch(h, name) assert(io.open(h.dir .. "/" .. name, "w")):close() end

-- The rest of the output and the exit status.
local function finish(h)
  local out = h.p:read("a")
  local _, how, code = h.p:close()
  return code, out, how
end

describe("signals in dmlua", function()
  for name, n in pairs(signals) do
    it("turns SIG" .. name .. " into an error that <close> variables see, and exits " .. 128 + n, function()
      local h = start([[
local t <close> = setmetatable({}, {__close = function(_, e) print("closed", e ~= nil) end})
ready()
spin()
]])
      kill(h, name)
      local code, out = finish(h)
      assert.equal(128 + n, code, out)
      assert.matches("closed\ttrue\n", out, 1, true)
      assert.matches("signal: interrupted by SIG" .. name, out, 1, true)
    end)
  end

  it("raises the module's error object, and the status stays 130 when the script catches it", function()
    local h = start([[
local ok, e = pcall(function() ready() spin() end) -- ready inside: the signal lands in the pcall
print(ok, e.op, e.signal, e.errno, getmetatable(e).__name, tostring(e))
os.exit(0)
]])
    kill(h, "INT")
    local code, out = finish(h)
    assert.equal(130, code, out)
    assert.equal("false\tsignal\t2\t4\tdevmapper.Error\tsignal: interrupted by SIGINT\n", out)
  end)

  it("lets the undo finish: later signals are recorded, not raised", function()
    local h = start([[
local t <close> = setmetatable({}, {__close = function()
  print("undoing") io.stdout:flush()
  wait_for("second")
  print("undo finished")
end})
ready()
spin()
]])
    kill(h, "TERM")
    assert.equal("undoing", h.p:read("l"))
    kill(h, "INT")
    kill(h, "TERM")
    touch(h, "second")
    local code, out = finish(h)
    assert.equal(143, code, out)
    assert.matches("undo finished\n", out, 1, true)
  end)

  it("raises a signal that arrives in a critical section only after the section is left", function()
    local h = start([[
core.critical_enter()
core.critical_enter()
ready()
wait_for("sent")
for _ = 1, 1000 do end
print("inside") io.stdout:flush()
core.critical_leave()
print("still inside, one level") io.stdout:flush()
core.critical_leave()
print("after leave")
]])
    kill(h, "INT")
    touch(h, "sent")
    local code, out = finish(h)
    assert.equal(130, code, out)
    assert.matches("^inside\nstill inside, one level\n", out)
    assert.is_nil(out:find("after leave", 1, true))
    assert.matches("interrupted by SIGINT", out, 1, true)
  end)

  it("keeps a signal the caller ignores ignored (nohup)", function()
    local h = start("ready()\nwait_for('go')\nprint('not interrupted')\n", nil, "--ignore-signal=HUP")
    kill(h, "HUP")
    touch(h, "go")
    local code, out = finish(h)
    assert.equal(0, code, out)
    assert.equal("not interrupted\n", out)
  end)

  it("refuses to leave a critical section that is not open", function()
    local ok, err = pcall(core.critical_leave)
    assert.is_false(ok)
    assert.equal("critical_leave", err.op)
  end)
end)

describe("signals in dmlua #kernel", function()
  local function gone(dir, name, loop)
    assert.is_nil(core.dm_info(name), "device " .. name .. " is left")
    assert.is_false(support.opens(dir .. "/store"), "the backing file is left")
    assert.equal("", (support.sh("losetup --associated " .. dir .. "/store")))
    if loop then assert.is_nil(core.loop_info(loop), loop .. " is still attached") end
  end

  local body = [[
local dm = require "devmapper"
local s <close> = dm.scope()
local l = dm.loop.create(dir .. "/store", "2MiB")
local d = dm.create(arg[2], dm.table {dm.linear(l)})
local f = io.open(dir .. "/loop", "w") f:write(l.path) f:close()
]]

  for _, sig in ipairs {"INT", "TERM"} do
    it("undoes a scope's loop and device on SIG" .. sig .. " and exits " .. 128 + signals[sig], function()
      local name = ("sig%s%d"):format(sig:lower(), math.random(1e6))
      local h = start(body .. "ready()\nspin()\n", {name})
      local loop = io.open(h.dir .. "/loop"):read("a")
      assert.truthy(core.dm_info(name))
      kill(h, sig)
      local code, out = finish(h)
      assert.equal(128 + signals[sig], code, out)
      gone(h.dir, name, loop)
    end)
  end

  it("finishes a suspend window before it raises, and leaves nothing suspended", function()
    local name = ("sigcrit%d"):format(math.random(1e6))
    local h = start(body .. [[
core.critical_enter()
d:suspend()
ready()
wait_for("sent")
print("suspended", d:info().suspended) io.stdout:flush()
d:resume()
core.critical_leave()
print("after leave")
]], {name})
    local loop = io.open(h.dir .. "/loop"):read("a")
    kill(h, "INT")
    touch(h, "sent")
    local code, out = finish(h)
    assert.equal(130, code, out)
    assert.matches("^suspended\ttrue\n", out)
    assert.is_nil(out:find("after leave", 1, true))
    gone(h.dir, name, loop)
  end)

  -- A crypt create takes its name (a device without a table), links its
  -- keys, then loads and resumes: the script stops at the load.
  local keyed = [[
local dm = require "devmapper"
local s <close> = dm.scope()
local l = dm.loop.create(dir .. "/store", "2MiB")
local f = io.open(dir .. "/loop", "w") f:write(l.path) f:close()
dm.kernel.fault = function(op) if op == "dm_load" then ready() wait_for("sent") end return false end
dm.create(arg[2], dm.crypt {l, key = dm.key.random(64), length = 8})
print("created") io.stdout:flush()
spin()
]]

  it("finishes a crypt create a signal arrives in, then undoes it: no device, no keyring", function()
    local name = ("sigkey%d"):format(math.random(1e6))
    local h = start(keyed, {name})
    local loop = io.open(h.dir .. "/loop"):read("a")
    assert.is_table(core.ring_keys("devmapper:dev:" .. name), "the keys are linked before the load")
    kill(h, "INT")
    touch(h, "sent")
    local code, out = finish(h)
    assert.equal(130, code, out)
    assert.is_nil(out:find("created", 1, true), "the error came as the create ended")
    gone(h.dir, name, loop)
    assert.is_nil(core.ring_keys("devmapper:dev:" .. name))
  end)

  it("leaves what a SIGKILL in a crypt member's create left to dm.cleanup; the stack applies again", function()
    local prefix = ("sigkill%d"):format(math.random(1e6))
    local h = start([[
local dm = require "devmapper"
local l = dm.loop.create(dir .. "/store", "2MiB")
local f = io.open(dir .. "/loop", "w") f:write(l.path) f:close()
dm.kernel.fault = function(op) if op == "dm_load" then ready() spin() end return false end
dm.stack {prefix = arg[2], c = dm.crypt {l, key = dm.key.random(64), length = 8}}:apply()
]], {prefix})
    kill(h, "KILL")
    finish(h)
    local name = prefix .. "-c"
    local info = core.dm_info(name)
    assert.is_false(info.live_table, "the name was taken, no table loaded yet")
    assert.is_table(core.ring_keys("devmapper:dev:" .. name), "its keys were linked")
    local dm = require "devmapper"
    assert.same({name}, dm.cleanup(prefix))
    assert.is_nil(core.dm_info(name))
    assert.is_nil(core.ring_keys("devmapper:dev:" .. name))
    local loop = io.open(h.dir .. "/loop"):read("a")
    local l = dm.loop.open(loop)
    local st = dm.stack {prefix = prefix, c = dm.crypt {l, key = dm.key.random(64), length = 8}}
    st:apply()
    assert.is_true(core.dm_info(name).live_table)
    st:teardown()
    assert.is_nil(core.ring_keys("devmapper:dev:" .. name))
    l:remove()
  end)
end)
