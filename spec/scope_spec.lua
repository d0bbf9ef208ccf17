-- Undo goes on: scopes and transactions try every step, report what is left
-- in one error, and can try it again.
local dm = require "devmapper"
local scope = require "devmapper.scope"
local transaction = require "devmapper.transaction"

describe("scope", function()
  it("tries every undo step, newest first, and lists what is left", function()
    local done, flaky = {}, 2
    local s = dm.scope()
    scope.track("a", function() done[#done + 1] = "a" end)
    scope.track("b", function() error("b is busy", 0) end)
    scope.track("c", function()
      flaky = flaky - 1
      if flaky > 0 then error({op = "remove", errno = 16, message = "c is busy"}, 0) end
      done[#done + 1] = "c"
    end)
    scope.track("d", function() done[#done + 1] = "d" end)
    local ok, err = pcall(s.close, s)
    assert.is_false(ok)
    assert.same({"d", "a"}, done)
    assert.equal("undo", err.op)
    assert.equal("undo: 2 of 4 left: c (table: ", tostring(err):sub(1, 29))
    assert.matches("; b %(b is busy%)$", tostring(err))
    assert.same({"c", "b"}, {err.left[1].what, err.left[2].what})
    -- retry tries only what is left; c now works, b still does not
    local ok2, err2 = pcall(err.retry)
    assert.is_false(ok2)
    assert.same({"d", "a", "c"}, done)
    assert.equal("undo: 1 of 2 left: b (b is busy)", tostring(err2))
  end)

  it("lets the block's own error win, and warns of what undo left", function()
    local warned, was = {}, dm.kernel.warn
    dm.kernel.warn = function(m) warned[#warned + 1] = m end
    local ok, err = pcall(function()
      local s <close> = dm.scope()
      scope.track("x", function() error("x is stuck", 0) end)
      error("the script failed", 0)
    end)
    dm.kernel.warn = was
    assert.is_false(ok)
    assert.equal("the script failed", err)
    assert.equal("while unwinding after an error: undo: 1 of 1 left: x (x is stuck)", warned[1])
  end)

  it("rolls a transaction back past a failing undo, and says what is left", function()
    local undone = {}
    local tx = transaction.begin("apply", "demo")
    tx:undo("first", function() undone[#undone + 1] = "first" end)
    tx:undo("second", function() error("second is stuck", 0) end)
    tx:undo("third", function() undone[#undone + 1] = "third" end)
    local ok, err = pcall(tx.step, tx, "fourth", function() error("fourth failed", 0) end)
    assert.is_false(ok)
    assert.same({"third", "first"}, undone)
    assert.equal("fourth", err.step)
    assert.matches("^apply 'demo': step 'fourth' failed: fourth failed; undoing the earlier steps failed too: "
                   .. "undo: 1 of 3 left: second %(second is stuck%)$", tostring(err))
    assert.equal("second", err.left[1].what)
    assert.is_function(err.retry)
  end)
end)
