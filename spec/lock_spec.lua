-- core.lock: an exclusive flock between processes (util-linux flock as the
-- oracle); two dmlua processes take turns.
local core = require "devmapper.core"
local support = require "spec.support"
after_each(support.cleanup)

local function free(path) return select(2, support.sh("flock --nonblock " .. path .. " true")) == 0 end

local function read(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

local function wait_until(what, f)
  for _ = 1, 3000 do
    if f() then return end
    core.sleep(0.01)
  end
  error("timed out waiting for " .. what)
end

-- A dmlua running script in the background with dir as arg[1].
local function spawn(dir, name, script)
  local path = dir .. "/" .. name .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write([[
local core = require "devmapper.core"
local dir = arg[1]
local function log(s) local f = io.open(dir .. "/log", "a") f:write(s, "\n") f:close() end
local function wait_for(n) while not io.open(dir .. "/" .. n) do core.sleep(0.01) end end
]], script)
  f:close()
  return io.popen(("timeout -s KILL 60 env --default-signal=INT build/dmlua %s %s 2>&1"):format(path, dir))
end

describe("core.lock", function()
  it("holds an exclusive flock until closed, making the file 0600 and its directories", function()
    local dir = support.tmpdir()
    local path = dir .. "/run/lock/lua-devmapper/demo.lock"
    local l = core.lock(path)
    assert.equal("devmapper.Lock " .. path, tostring(l))
    assert.equal("-rw-------", (support.sh("stat -c %A " .. path):gsub("%s+$", "")))
    assert.is_false(free(path))
    l:close()
    assert.is_true(free(path))
    l:close() -- idempotent
    assert.equal("devmapper.Lock (closed)", tostring(l))
    do
      local m <close> = core.lock(path)
      assert.is_false(free(path))
    end
    assert.is_true(free(path))
    core.lock(path) -- dropped: __gc lets go
    collectgarbage()
    collectgarbage()
    assert.is_true(free(path))
  end)

  it("makes a second process wait until the first closes", function()
    local dir = support.tmpdir()
    local lock = dir .. "/x.lock"
    local a = spawn(dir, "a", ([[
local l = core.lock(%q)
log("A locked")
wait_for("release")
log("A releases")
l:close()
]]):format(lock))
    wait_until("A to lock", function() return read(dir .. "/log"):find("A locked") end)
    local b = spawn(dir, "b", ([[
log("B waits")
local l <close> = core.lock(%q)
log("B locked")
]]):format(lock))
    wait_until("B to wait", function() return read(dir .. "/log"):find("B waits") end)
    core.sleep(0.3) -- time enough for B to be wrong, if the lock let it through
    assert(io.open(dir .. "/release", "w")):close()
    assert.equal("", a:read("a"))
    assert.is_true(a:close())
    assert.equal("", b:read("a"))
    assert.is_true(b:close())
    assert.equal("A locked\nB waits\nA releases\nB locked\n", read(dir .. "/log"))
  end)

  it("gives way to a signal while it waits", function()
    local dir = support.tmpdir()
    local lock = dir .. "/held.lock"
    local held <close> = core.lock(lock)
    local p = spawn(dir, "w", ([[
local f = io.open("/proc/self/stat") print("ready " .. f:read("n")) f:close() io.stdout:flush()
local l = core.lock(%q)
print("locked")
]]):format(lock))
    local pid = p:read("l"):match("^ready (%d+)$")
    assert(os.execute("kill -INT " .. pid))
    local out = p:read("a")
    local _, _, code = p:close()
    assert.equal(130, code, out)
    assert.is_nil(out:find("locked\n", 1, true))
  end)

  it("names the path when it cannot lock", function()
    local ok, err = pcall(core.lock, "/proc/self/nonexistent/x.lock")
    assert.is_false(ok)
    assert.equal("lock", err.op)
    assert.equal("/proc/self/nonexistent/x.lock", err.name)
  end)
end)
