-- The corpus: table cases with the kernel's own verdict, measured on the
-- real kernel by spec/corpus/probe.lua (see spec/corpus/README.md). The
-- module must agree: refuse what the kernel refuses, accept what it accepts
-- and send exactly the text the kernel prints back. A case the module
-- judges otherwise on purpose says so in `module` ("ok" or "refused") and
-- `why`; a case where the kernel prints back a value of its own choosing
-- (snapshot chunk 0) says `kernel_chooses`.
local dm = require "devmapper"
local cases = dofile("spec/corpus/tables.lua")

-- Trailing blanks are dmsetup's, not the kernel's (see the corpus README).
local function trim(s) return (s:gsub("%s+\n", "\n"):gsub("%s+$", "")) end

-- What the kernel printed back, as the module shows it: with the keys
-- (dmsetup --showkeys), hex keys then as zeros (the module never shows one).
local function readback(c)
  local t = trim(c.showkeys or c.table or c[1])
  return (t:gsub("( crypt %S+ )(%x+)( )", function(a, k, b) return a .. ("0"):rep(#k) .. b end))
end

--- The module's verdict on a case's text: true and the text it would send,
-- or false and the error.
local function judge(text, ctx)
  local ok, res = pcall(function()
    local t = dm.table.parse(text)
    t:validate(ctx)
    return trim(t:text(ctx))
  end)
  return ok, res
end

--- Every disagreement between the module and the corpus, as lines.
-- @tparam function subst(text) placeholders to this lane's devices and keys
-- @tparam table ctx the lane's resolution context
local function disagreements(subst, ctx, only)
  local out = {}
  for i, c in ipairs(cases) do
    if not only or only(c) then
      local want = c.module or c.kernel
      local ok, res = judge(subst(c[1]), ctx)
      if ok ~= (want == "ok") then
        out[#out + 1] = ("case %d (%s): the module %s, the kernel %s%s: %s\n    %s"):format(i, c.group,
          ok and "accepts" or "refuses", c.kernel == "ok" and "accepts" or "refuses",
          c.module and " (and the corpus says the module should " .. (want == "ok" and "accept" or "refuse") .. ")" or "",
          c[1]:gsub("\n", " / "), ok and "" or tostring(res))
      elseif ok and c.kernel == "ok" and not c.kernel_chooses and res ~= subst(readback(c)) then
        out[#out + 1] = ("case %d (%s): the module would send %q, the kernel prints back %q"):format(i, c.group,
          res, subst(readback(c)))
      elseif not ok and (type(res) ~= "table" or not res.errno or tostring(res):find("\n")) then
        out[#out + 1] = ("case %d: not the error object: %s"):format(i, tostring(res))
      end
    end
  end
  return out
end

describe("corpus", function()
  it("holds at least 300 cases over every target", function()
    local groups = {}
    for _, c in ipairs(cases) do groups[c.group] = (groups[c.group] or 0) + 1 end
    assert.is_true(#cases >= 300, #cases .. " cases")
    for _, g in ipairs {"linear", "striped", "zero", "error", "crypt", "snapshot", "snapshot-origin", "snapshot-merge",
                        "delay", "flakey", "unstriped", "log-writes", "era", "raid"} do
      assert.is_true((groups[g] or 0) >= 5, "group " .. g)
    end
    for i, c in ipairs(cases) do
      assert.is_true(c.module == nil or (c.why ~= nil and c.module ~= c.kernel), "case " .. i .. ": a module verdict needs a why")
    end
  end)

  -- The host has no device-mapper: made-up devices stand for the probe's loops.
  it("the module agrees with the kernel on every case (made-up devices)", function()
    local devs = {
      A = {"7:0", 4096, 512}, B = {"7:1", 4096, 512}, C = {"7:2", 4096, 512}, K = {"7:3", 4096, 4096},
      S = {"7:4", 128, 512},
    }
    local P, facts = {}, {}
    for name, d in pairs(devs) do
      local ma, mi = d[1]:match("(%d+):(%d+)")
      local f = {major = tonumber(ma), minor = tonumber(mi), sectors = d[2], logical_block_size = d[3],
                 path = "/dev/corpus-" .. name}
      P[name], P["P" .. name], facts[d[1]], facts[f.path] = d[1], f.path, f, f
    end
    P.AMIN, P.AMIN32, P.AHEX, P.SELF = "0", tostring(1 << 32), "700", "254:0"
    P.KEY32, P.KEY64 = ":32:logon:devmapper:corpus32", ":64:logon:devmapper:corpus64"
    P.UKEY32, P.NOKEY = ":32:user:devmapper:corpus-user32", ":32:logon:devmapper:absent"
    local function subst(text) return (text:gsub("%$(%u[%u%d]*)", P)) end
    local ctx = {}
    function ctx.facts(d)
      local p = type(d) == "table" and d.path or d
      -- /dev/loopN, however spelled, is the made-up loop of that minor
      local minor = type(p) == "string" and p:gsub("/+", "/"):gsub("/dev/%.%./dev/", "/dev/"):match("^/dev/loop(%d+)$")
      if minor then p = "7:" .. minor end
      local f = facts[p]
      if not f then
        require("devmapper.core").error {op = "blkdev", name = tostring(d), errno = 19, message = "no such block device"}
      end
      return f
    end
    function ctx.name(d) return (ctx.facts(d).path) end
    function ctx.dev(d) local f = ctx.facts(d) return f.major .. ":" .. f.minor end
    local out = disagreements(subst, ctx)
    assert.equal(0, #out, #out .. " disagreements:\n" .. table.concat(out, "\n"))
  end)
end)

-- The kernel lane: every case fed to the module and to dmsetup on the same
-- loops and keys (the probe's); where both accept, the module makes the
-- device itself and the kernel must print back exactly the module's text.
-- Tables are read back through the C core's ioctl (what dmsetup table
-- prints), so that each case costs one exec, dmsetup create's.
describe("corpus #kernel #corpus", function()
  it("the module and the kernel agree on every case, on the same devices", function()
    local probe = require "spec.corpus.probe"
    local out = {}
    local function say(i, c, fmt, ...)
      out[#out + 1] = ("case %d (%s): " .. fmt):format(i, c.group, ...) .. ": " .. c[1]:gsub("\n", " / ")
    end
    local ok, err = pcall(function()
      probe.setup()
      for i, c in ipairs(cases) do
        local text = probe.subst(c[1])
        local mok, res = judge(text)
        local r = probe.measure(c[1], true)
        local want = c.module or c.kernel
        -- read back in process: the unmasked text (see probe.measure)
        local unmasked = c.showkeys or c.table or trim(c[1])
        if r.kernel ~= c.kernel or (r.kernel == "ok" and (r.table or trim(c[1])) ~= unmasked) then
          say(i, c, "the kernel now says %s%s, the corpus %s (measure it again)", r.kernel,
              r.table and " " .. r.table or "", c.kernel)
        elseif mok ~= (want == "ok") then
          say(i, c, "the module %s (%s)", mok and "accepts" or "refuses", mok and "" or tostring(res))
        elseif mok and c.kernel == "ok" then
          local mine = probe.unsubst(res)
          if not c.kernel_chooses and mine ~= readback(c) then
            say(i, c, "the module would send %q, the kernel prints back %q", mine, readback(c))
          end
          probe.zero_loops()
          local dok, back = pcall(function()
            local dev = dm.create("corpus", text)
            local shown = probe.core_table("corpus")
            dev:remove()
            return shown
          end)
          if not dok then
            say(i, c, "the module's own create failed (%s)", tostring(back))
          else
            local got = readback {probe.unsubst(trim(back))}
            if not c.kernel_chooses and got ~= mine then say(i, c, "the module made %q, the kernel got %q", mine, got) end
          end
        end
      end
    end)
    pcall(probe.teardown)
    if not ok then error(err, 0) end
    assert.equal(0, #out, #out .. " disagreements:\n" .. table.concat(out, "\n"))
  end)
end)

return {cases = cases, judge = judge, disagreements = disagreements, trim = trim}
