-- dmlua is lua5.4 for every option and case (output and exit status),
-- plus its own long options. lua5.4 itself is the oracle.
local support = require "spec.support"
after_each(support.cleanup)

-- Both interpreters run the same command line in dir, found by PATH as
-- "lua5.4" and "dmlua"; dmlua's name, its version suffix and its own block
-- of the usage are put back to lua5.4's before comparing.
local function both(dir, cmdline)
  local function run(prog)
    return support.sh(("cd %s && PATH=%s/build:$PATH %s %s 2>&1; echo \"rc=$?\""):format(dir, os.getenv("PWD"), prog, cmdline))
  end
  local want = run("lua5.4")
  local got = run("dmlua"):gsub("dmlua", "lua5.4"):gsub(" %(lua%-devmapper%)", "")
                          :gsub("lua%-devmapper's own:\n.-%-%-version[^\n]*\n", "")
  return want, got
end

describe("dmlua beside lua5.4", function()
  it("answers every command line of the battery as lua5.4 does", function()
    local dir = support.tmpdir()
    support.file(dir .. "/s.lua", 'print("script", ...)\n')
    support.file(dir .. "/-", 'print("a file named -")\n')
    support.file(dir .. "/err.lua", 'error("e")\n')
    support.file(dir .. "/repl.txt", "for i = 1, 2 do\nprint(i)\nend\n=1+1\nreturn 1, nil, 3\nlocal t = {}\nt\nx = \n5\nprint(x)\n")
    support.file(dir .. "/prompt.txt", '_PROMPT = "P> "\n_PROMPT2 = "P>> "\nif true then\nprint(1)\nend\n')
    local battery = {
      -- refused options: the reason, then the usage, status 1
      "-z", "-e", "-l", "-e -x", "-l -x", "-vx", "-Ex", "-ix", "--x", "-Wfoo",
      -- options in order: -W applies from where it is
      "-e 'print(1)' -W -e 'warn(\"x\")'", "-W -e 'warn(\"x\")'", "-e 'warn(\"x\")' -W",
      -- '-' is stdin, unless it follows '--'
      "-e 'print(1)' -- -", "-e 'print(1)' - < s.lua", "-- s.lua x", "--", "- < s.lua",
      "< /dev/null", "-v", "-i < /dev/null", "-i -e 'x=5' < /dev/null", "-i s.lua q < /dev/null",
      "s.lua a b", "-e 'print(arg[0], arg[-1], arg[-2], #arg)' s.lua a", "-e 'print(...)' a b",
      "-e 'x=1' -e 'print(x)'", "-lstring -e 'print(string.len\"ab\")'", "-l s=string -e 'print(s.rep(\"a\",3))'",
      "-l nosuchmod", "-e 'error(\"boom\")'", "-e 'error({})'",
      "-e 'error(setmetatable({}, {__tostring = function() return \"obj\" end}))'",
      "-e 'os.exit(3)'", "-e 'os.exit(false)'", "nosuch.lua", "-E -e 'print(1)'", "-e 'syntax error here'",
      -- an error in a script from stdin is reported, but lua5.4 exits 0 (dofile's status is not the exit's)
      "< err.lua", "- < err.lua", "err.lua",
      -- the interactive loop: expressions, multi-line statements, '=', prompts, errors
      "-i < repl.txt", "-i < prompt.txt",
    }
    for _, cmd in ipairs(battery) do
      local want, got = both(dir, cmd)
      assert.equal(want, got, cmd)
    end
    -- LUA_INIT runs first, unless -E
    local init = "LUA_INIT='print(\"init\")' %s -e 'print(2)' 2>&1; echo rc=$?"
    assert.equal(support.sh(init:format("lua5.4")), support.sh(init:format("build/dmlua")))
    assert.equal("2\nrc=0\n", support.sh(init:format("build/dmlua -E")))
  end)

  it("ends a chunk cut short by the end of input with its syntax error (lua5.4 prints '(null)')", function()
    local dir = support.tmpdir()
    support.file(dir .. "/cut.txt", "for i = 1, 2 do\n")
    local out = support.sh(("cd %s && %s/build/dmlua -i < cut.txt 2>&1; echo rc=$?"):format(dir, os.getenv("PWD")))
    assert.matches(">> stdin:1: 'end' expected near <eof>\n", out, 1, true)
    assert.matches("rc=0", out, 1, true)
  end)

  it("has --help, --version, and refuses --udev without --sandbox", function()
    local out, code = support.sh("build/dmlua --help")
    assert.equal(0, code)
    assert.matches("usage: build/dmlua [options] [script [args]]", out, 1, true)
    assert.matches("--sandbox", out, 1, true)
    out, code = support.sh("build/dmlua --version")
    assert.equal(0, code, out)
    assert.matches("^Lua 5%.4%.%d+  Copyright .- %(lua%-devmapper%)\nlua%-devmapper %S+\ndevice%-mapper driver", out)
    out, code = support.sh("build/dmlua --udev -e 'print(1)'")
    assert.equal(1, code)
    assert.matches("'--udev' needs '--sandbox'", out, 1, true)
  end)
end)
