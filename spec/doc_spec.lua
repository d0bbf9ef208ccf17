-- The API reference (make doc): LDoc builds it from config.ld without a
-- single warning, and every function a public module exports, every method
-- of its classes (the Lua ones and the C core's), every target builder and
-- every target message has an entry in it. A function that should not be
-- in the reference says so (`local`, or `@local` in its doc comment): one
-- that has no doc comment at all fails here.
local support = require "spec.support"
after_each(support.cleanup)

-- Modules that are no part of the public API: the module's own machinery.
-- A new file under lua/devmapper goes either here or into config.ld.
local INTERNAL = {
  ["devmapper.check"] = true, ["devmapper.field"] = true, ["devmapper.size"] = true,
  ["devmapper.target"] = true, ["devmapper.transaction"] = true, ["devmapper.keyring"] = true,
  ["devmapper.trace"] = true,
}

-- config.ld's list of files, and the public modules it names.
local function config()
  local env = {}
  local f = assert(io.open("config.ld"))
  assert(load(f:read("a"), "config.ld", "t", env))()
  f:close()
  local modules = {}
  for _, path in ipairs(env.file) do
    local m = path:match("^lua/devmapper/([%w_]+)%.lua$")
    if m then modules[#modules + 1] = m == "init" and "devmapper" or "devmapper." .. m end
  end
  return env, modules
end

-- Run ldoc into a fresh directory; its output, less its progress lines.
local function ldoc(all)
  local dir = support.tmpdir() .. "/doc"
  local out, code = support.sh(("LUA_PATH='doc/?.lua;;' ldoc %s -d %s ."):format(all and "--all" or "", dir))
  local warnings = {}
  for line in out:gmatch("[^\n]+") do
    if not (line:match("^reading configuration from ") or line:match("^found master module")
            or line:match("^output written to ")) then
      warnings[#warnings + 1] = line
    end
  end
  return dir, code, warnings
end

-- The entries of each page: {[module] = {[anchor] = true}}.
local function entries(dir, modules)
  local pages = {}
  for _, m in ipairs(modules) do
    local f = io.open(("%s/modules/%s.html"):format(dir, m))
    if f then
      local set = {}
      for name in f:read("a"):gmatch('<a name%s*=%s*"([^"]+)"></a>') do
        set[name] = true
        -- a module function documented inside a class's section reads Class.name
        local fn = name:match("^%u[%w_]*%.([%w_]+)$")
        if fn then set[fn] = true end
      end
      f:close()
      pages[m] = set
    end
  end
  return pages
end

-- What the public API exposes: {{module, name, what}}. The modules'
-- functions; the methods of every class (a metatable named devmapper.*)
-- reached from them, through fields and upvalues, and of the C core's
-- classes; the target builders and the target messages (methods of a Device).
local function exposed(modules)
  local want = {}
  local function add(page, name, what) want[#want + 1] = {page = page, name = name, what = what} end
  local classes, seen = {}, {}
  local function class(name, t)
    local mt = type(t) == "table" and rawget(t, "__name")
    if type(mt) == "string" and mt:match("^devmapper%.") and not classes[t] then classes[t] = name end
  end
  local function walk(name, v)
    if seen[v] or name == "_ENV" then return end
    if type(v) == "table" then
      seen[v] = true
      class(name, v)
      for k, x in pairs(v) do if type(k) == "string" then walk(k, x) end end
      local mt = getmetatable(v)
      if type(mt) == "table" then walk(name, mt) end
    elseif type(v) == "function" then
      seen[v] = true
      local i = 1
      while true do
        local n, x = debug.getupvalue(v, i)
        if not n then break end
        walk(n, x)
        i = i + 1
      end
    end
  end
  for _, m in ipairs(modules) do
    local mod = require(m)
    for k, v in pairs(mod) do
      if type(v) == "function" and not k:match("^__") then add(m, k, m .. "." .. k) end
    end
    walk(m, mod)
  end
  -- the C core's classes: their methods are in the metatable's __index
  for name, mt in pairs(debug.getregistry()) do
    if type(name) == "string" and name:match("^devmapper%.%u") and type(mt) == "table"
       and type(rawget(mt, "__index")) == "table" and not classes[mt.__index] then
      classes[mt.__index] = name:match("^devmapper%.(.*)")
    end
  end
  for t, name in pairs(classes) do
    local internal = false
    for k, v in pairs(t) do
      if type(v) == "function" and not k:match("^__") then
        local src = debug.getinfo(v, "S").source
        local file = src:match("lua/devmapper/([%w_]+)%.lua$")
        if file and INTERNAL["devmapper." .. file] then internal = true break end
        add(file and (file == "init" and "devmapper" or "devmapper." .. file), name .. ":" .. k,
            ("%s:%s (%s)"):format(name, k, src))
      end
    end
    if internal then
      -- a class of the machinery (a target's Segment): not in the reference
      for i = #want, 1, -1 do if want[i].name:match("^" .. name .. ":") then table.remove(want, i) end end
    end
  end
  local target = require "devmapper.target"
  for _, ty in ipairs(target.TYPES) do
    local b = ty:gsub("%-", "_")
    add("devmapper", b, "dm." .. b .. " (the " .. ty .. " target's builder)")
    for msg in pairs(target.get(ty).messages or {}) do
      add("devmapper", "Device:" .. msg, ("Device:%s (a message of %s)"):format(msg, ty))
    end
  end
  return want
end

describe("the API reference", function()
  it("builds with no LDoc warning and has an entry for every public function and method", function()
    local conf, modules = config()
    assert.equal("build/doc", conf.dir)

    -- every module file is either in the reference or named internal here
    local listed = {}
    for _, m in ipairs(modules) do listed[m] = true end
    for file in support.sh("ls lua/devmapper"):gmatch("([%w_]+)%.lua") do
      local m = file == "init" and "devmapper" or "devmapper." .. file
      assert.is_true(listed[m] or INTERNAL[m] or false, m .. " is neither in config.ld nor internal")
    end
    -- every module the facade hands out (dm.loop, dm.key, ...) is documented
    local dm = require "devmapper"
    for k, v in pairs(dm) do
      for name, mod in pairs(package.loaded) do
        if mod == v and type(v) == "table" then
          assert.is_true(listed[name] or false, ("dm.%s (%s) is not in config.ld"):format(k, name))
        end
      end
    end

    local dir, code, warnings = ldoc(false)
    assert.equal(0, code, table.concat(warnings, "\n"))
    assert.same({}, warnings)
    local pages = entries(dir, modules)
    for _, m in ipairs(modules) do assert.is_truthy(pages[m], "no page for " .. m) end
    -- with --all, what is marked @local shows too: an exported function
    -- missing from both has no doc comment
    local alldir = ldoc(true)
    local all = entries(alldir, modules)

    local missing = {}
    for _, w in ipairs(exposed(modules)) do
      local function has(set) return set and set[w.name] end
      local found, marked_local
      if w.page then
        found, marked_local = has(pages[w.page]), has(all[w.page])
      else -- a method in C: on whichever page documents its class
        for _, m in ipairs(modules) do
          found = found or has(pages[m])
          marked_local = marked_local or has(all[m])
        end
      end
      if not found and not marked_local then missing[#missing + 1] = w.what end
    end
    table.sort(missing)
    assert.same({}, missing)
  end)

  it("make doc writes it to build/doc", function()
    local out, code = support.sh("make -s doc")
    assert.equal(0, code, out)
    assert.is_true(support.opens("build/doc/index.html"))
    assert.is_true(support.opens("build/doc/modules/devmapper.html"))
  end)
end)
