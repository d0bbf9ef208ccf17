-- dm.json and dmlua --json: the module's tables as JSON, keys never exported.
local dm = require "devmapper"
local support = require "spec.support"
local refused = support.refused
after_each(support.cleanup)

describe("dm.json", function()
  it("writes values as JSON: sorted keys, lists, escapes, bytes in hex, keys as <key>", function()
    assert.equal('{"a":1,"b":[1,2.5,"x\\n\\"\\u0001"],"c":true,"d":{}}',
                 dm.json {b = {1, 2.5, 'x\n"\1'}, a = 1, c = true, d = {}})
    local k = dm.key.from_hex(("ab"):rep(32))
    local _, params = dm.key.derive("pw", {iterations = 1000, salt = "\0\1\255", size = 16})
    assert.equal('{"hash":"sha256","iterations":1000,"kdf":"pbkdf2","salt":"0001ff","size":16}', dm.json(params))
    local text = dm.json {key = k, seg = dm.crypt {"7:0", key = k, keyring = false, length = 8}}
    assert.is_nil(text:find("abab", 1, true), "no key byte")
    assert.equal('{"key":"<key>","seg":"0 8 crypt aes-xts-plain64 ' .. ("0"):rep(64) .. ' 0 7:0 0"}', text)
    assert.equal('"0 8 zero\\n8 8 error"', dm.json(dm.table.parse("0 8 zero\n8 8 error")))
    refused(function() dm.json {[{}] = 1} end, "value has a table key")
    refused(function() dm.json {1, x = 2} end, "value mixes a list and named fields")
    refused(function() dm.json {f = 0 / 0} end, "value.f is")
    refused(function() dm.json(print) end, "value is a function")
    local t = {}
    t.self = t
    refused(function() dm.json(t) end, "value.self holds itself")
  end)

  it("makes errors JSON: the module's with their fields, Lua's with a traceback", function()
    local _, err = pcall(dm.table.parse, "0 8 linear")
    assert.equal('{"error":{"errno":22,"message":"line 1 (linear): field \'dev\' is missing: linear takes <dev> <offset>",'
                 .. '"op":"table.parse","text":"table.parse: line 1 (linear): field \'dev\' is missing: linear takes <dev> '
                 .. '<offset>"}}', dm.json.error(err))
    assert.equal('{"error":{"message":"boom","traceback":"here"}}', dm.json.error("boom", "here"))
  end)

  it("dmlua --json prints plans and errors as JSON", function()
    local out, code = support.sh([[build/dmlua --json --dry-run -e '
      local dm = require "devmapper"
      local l = dm.loop.create("/tmp/json-spec", "1MiB")
      print(dm.stack {prefix = "j", a = dm.linear(l), b = dm.linear("a")}:plan())' 2>/dev/null]])
    assert.equal(0, code, out)
    out = out:match("[^\n]*\n$") -- after the dry run's own lines
    assert.equal('[{"commands":["dmsetup create j-a --uuid DMLUA-j-a --table \'0 2048 linear 7:1000 0\'"],'
                 .. '"member":"a","name":"j-a","op":"create","uuid":"DMLUA-j-a"},'
                 .. '{"commands":["dmsetup create j-b --uuid DMLUA-j-b --table \'0 2048 linear /dev/mapper/j-a 0\'"],'
                 .. '"member":"b","name":"j-b","op":"create","uuid":"DMLUA-j-b"}]\n', out)
    out, code = support.sh([[build/dmlua --json -e 'require("devmapper").table.parse("0 8 linear")' 2>&1]])
    assert.equal(1, code)
    assert.matches('^{"error":{"errno":22,"message":"line 1 %(linear%)', out)
    out = support.sh([[build/dmlua --json -e 'error("plain")' 2>&1]])
    assert.matches('^{"error":{"message":"%(command line%):1: plain","traceback":"stack traceback:\\n', out)
  end)
end)

describe("dm.json #kernel", function()
  it("writes info, status, blockdev facts and a plan of live devices", function()
    local l = support.loops(1)
    local dev = support.device("spec-json", dm.linear(l, {length = 8}))
    local info = dm.json(dev:info())
    assert.matches('"name":"spec-json"', info, 1, true)
    assert.matches('"suspended":false', info, 1, true)
    assert.equal('[{"length":8,"params":"","start":0,"type":"linear"}]', dm.json(dev:status()))
    assert.matches('"sectors":4096', dm.json(dm.blockdev(l)), 1, true)
    local s = dm.stack {prefix = "spec_json", a = dm.zero(8)}
    support.defer(function() pcall(dm.cleanup, "spec_json") end)
    s:apply()
    assert.matches('"op":"keep"', dm.json(s:plan()), 1, true)
  end)
end)
