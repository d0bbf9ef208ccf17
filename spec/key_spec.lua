-- Keys: KDF vectors, cryptsetup's plain derivation, calibration, reading,
-- the Key object's rules, and the kernel keyring (#keyring).
local dm = require "devmapper"
local support = require "spec.support"
local refused = support.refused
after_each(support.cleanup)

local function hex(k) return k:hex() end

local function unhex(s) return (s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)) end

-- The interpreter running the specs, for child processes: dmlua has the module built in.
local function lua_cmd() return package.preload["devmapper.core"] and "build/dmlua" or "lua5.4" end

local function file(dir, name, content)
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(content)
  f:close()
  return dir .. "/" .. name
end

describe("dm.key.derive", function()
  local function pbkdf2(p, s, c, len, hash)
    return hex(dm.key.derive(p, {kdf = "pbkdf2", hash = hash or "sha1", salt = s, iterations = c, size = len}))
  end

  it("meets the RFC 6070 PBKDF2-HMAC-SHA1 vectors", function()
    assert.equal("0c60c80f961f0e71f3a9b524af6012062fe037a6", pbkdf2("password", "salt", 1, 20))
    assert.equal("ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957", pbkdf2("password", "salt", 2, 20))
    assert.equal("4b007901b765489abead49d926f721d065a429c1", pbkdf2("password", "salt", 4096, 20))
    assert.equal("3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038",
                 pbkdf2("passwordPASSWORDpassword", "saltSALTsaltSALTsaltSALTsaltSALTsalt", 4096, 25))
    assert.equal("56fa6aa75548099dcc37d7f03425e0c3", pbkdf2("pass\0word", "sa\0lt", 4096, 16))
  end)

  it("meets PBKDF2-HMAC-SHA256 and SHA512 vectors", function()
    assert.equal("120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b",
                 pbkdf2("password", "salt", 1, 32, "sha256"))
    assert.equal("c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a",
                 pbkdf2("password", "salt", 4096, 32, "sha256"))
    assert.equal("867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252"
                 .. "c02d470a285a0501bad999bfe943c08f050235d7d68b1da55e63f73b60a57fce",
                 pbkdf2("password", "salt", 1, 64, "sha512"))
  end)

  it("meets the RFC 7914 scrypt vectors", function()
    local function scrypt(p, s, N, r, pp)
      return hex(dm.key.derive(p, {kdf = "scrypt", salt = s, N = N, r = r, p = pp, size = 64}))
    end
    assert.equal("77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442"
                 .. "fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906", scrypt("", "", 16, 1, 1))
    assert.equal("fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
                 .. "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640",
                 scrypt("password", "NaCl", 1024, 8, 16))
  end)

  it("returns the parameters that derive the same key again", function()
    local k, params = dm.key.derive("pw", {salt = "NaCl", iterations = 1000, size = 32})
    assert.same({kdf = "pbkdf2", hash = "sha256", salt = "NaCl", iterations = 1000, size = 32}, params)
    assert.is_true(dm.key.derive("pw", params) == k)
    local s, sp = dm.key.derive("pw", {kdf = "scrypt", salt = "NaCl", N = 1024, r = 8, p = 1})
    assert.same({kdf = "scrypt", salt = "NaCl", N = 1024, r = 8, p = 1, size = 64}, sp)
    assert.is_true(dm.key.derive("pw", sp) == s)
    assert.is_false(dm.key.derive("pW", sp) == s)
  end)

  it("makes a random 32-byte salt when none is given", function()
    local a, pa = dm.key.derive("pw", {iterations = 1000})
    local b, pb = dm.key.derive("pw", {iterations = 1000})
    assert.equal(32, #pa.salt)
    assert.are_not.equal(pa.salt, pb.salt)
    assert.is_false(a == b)
    assert.is_true(dm.key.derive("pw", pa) == a)
  end)

  it("takes a Key as the passphrase, with the same result as the string", function()
    local pass = dm.key.from_hex("70617373776f7264") -- "password"
    assert.equal("0c60c80f961f0e71f3a9b524af6012062fe037a6",
                 hex(dm.key.derive(pass, {hash = "sha1", salt = "salt", iterations = 1, size = 20})))
    assert.equal(hex(dm.key.plain("password", {hash = "sha256", size = 64})),
                 hex(dm.key.plain(pass, {hash = "sha256", size = 64})))
  end)

  it("refuses bad options, naming the field and the rule", function()
    refused(function() dm.key.derive("pw", {hash = "sha256;x", iterations = 1000}) end,
            "key.derive: field 'hash' must be a digest name (sha256, sha512, sha3-256, whirlpool, ...), got sha256;x")
    refused(function() dm.key.derive("pw", {kdf = "argon2id"}) end, "field 'kdf' must be one of pbkdf2, scrypt")
    refused(function() dm.key.derive("pw", {iterations = 1000, time = 1}) end,
            "fields 'iterations' and 'time' exclude each other")
    refused(function() dm.key.derive("pw", {iterations = 0}) end, "field 'iterations' must be an integer >= 1")
    refused(function() dm.key.derive("pw", {iteration = 1000}) end, "field 'iteration' is not an option")
    refused(function() dm.key.derive("pw", {kdf = "scrypt", N = 1000}) end, "field 'N' must be a power of 2")
    refused(function() dm.key.derive("pw", {kdf = "scrypt", N = 1024, hash = "sha256"}) end,
            "field 'hash' is for pbkdf2")
    refused(function() dm.key.derive("pw", {iterations = 1000, size = 0}) end,
            "field 'size' must be an integer from 1 to 4096")
    refused(function() dm.key.derive("pw", {time = -1}) end, "field 'time' must be seconds above 0")
    refused(function() dm.key.derive(42, {iterations = 1000}) end, "passphrase must be a string or a dm.key object")
  end)
end)

describe("calibration", function()
  -- CPU seconds of the fastest of three runs (load only ever slows a run).
  local function best(f)
    local m = math.huge
    for _ = 1, 3 do
      local t0 = os.clock()
      f()
      m = math.min(m, os.clock() - t0)
    end
    return m
  end

  -- Within 10% of a 0.5 s target; a busy machine gets five tries.
  local function within_10_percent(opts)
    local seen = {}
    for _ = 1, 5 do
      local _, params = dm.key.derive("passphrase", opts)
      local t = best(function() dm.key.derive("passphrase", params) end)
      if math.abs(t - 0.5) <= 0.05 then return params end
      seen[#seen + 1] = ("%.3f s"):format(t)
    end
    error("derivation times " .. table.concat(seen, ", ") .. " all miss 0.5 s by more than 10%")
  end

  it("times PBKDF2 to within 10% of the target", function()
    local params = within_10_percent {kdf = "pbkdf2", hash = "sha256", time = 0.5, progress = false}
    assert.is_true(params.iterations >= 1000)
    assert.is_nil(params.time)
  end)

  it("times scrypt to within 10% of the target, within its memory bound", function()
    local params = within_10_percent {kdf = "scrypt", time = 0.5, memory = "64MiB", progress = false}
    assert.is_true(128 * params.r * params.N <= 64 * 1024 * 1024)
  end)

  it("never goes below 1000 PBKDF2 iterations", function()
    local _, params = dm.key.derive("pw", {time = 0.0001, progress = false})
    assert.equal(1000, params.iterations)
  end)
end)

describe("dm.key.plain", function()
  -- Keys that cryptsetup 2.6.1 put in the kernel table (dmsetup table
  -- --showkeys) for `printf %s PASS | cryptsetup open --type plain --hash H
  -- --key-size BITS`, run in the sandbox.
  local oracle = {
    {"sha256", 64, "correct horse battery staple",
     "c4bbcb1fbec99d65bf59d85c8cb62ee2db963f0fe106f483d9afa73bd4e39a8a"
     .. "7b3ea89dd96477e00b6ea6c45ffe6eb5d68ed224ee68744df0b2fe5ad7c1d665"},
    {"sha512", 32, "correct horse battery staple", "be5ef7679d88ab9a9045f6267e55f5e5784b4b8cd764b5cd855a5244f91c6269"},
    {"ripemd160", 64, "correct horse battery staple",
     "5e708aa85ae8b0d080837c50bd63634d584edc00c69f7248ec99ca40274566ac"
     .. "a26ebe4602a66f5ed636589f5d050a152495f57996137750699e5c50bfccc182"},
    {"sha1", 64, "pass",
     "9d4e1e23bd5b727046a9e3b4b7db57bd8d6ee6847a765f8be83f65c8c8845adb"
     .. "b34b6a0ef7b8ff933c73eaafd35b7bc7ecefcf556260f0f17b86c901c46ceaf0"},
    {"plain", 32, "short", "73686f7274000000000000000000000000000000000000000000000000000000"},
    {"plain", 32, "a passphrase that is rather longer than thirty-two bytes",
     "612070617373706872617365207468617420697320726174686572206c6f6e67"},
    {"sha256:16", 32, "correct horse battery staple", "c4bbcb1fbec99d65bf59d85c8cb62ee200000000000000000000000000000000"},
    {"plain:8", 32, "0123456789", "3031323334353637000000000000000000000000000000000000000000000000"},
  }

  it("derives what cryptsetup --type plain derives", function()
    for _, c in ipairs(oracle) do
      assert.equal(c[4], hex(dm.key.plain(c[3], {hash = c[1], size = c[2]})), c[1] .. " " .. c[2])
    end
  end)

  -- cryptsetup's own tests/password-hash-test: its list of hashes, each a
  -- 32-byte key from "0123456789abcdef", and its length-limited forms.
  -- (stribog512, which OpenSSL lacks, is N/A there too.)
  local cryptsetup_vectors = {
    {"sha1", "fe5567e8d769550852182cdf69d74bb16dff8e295e4b6077d6d3fc73e7fe33b0"},
    {"sha224", "7330215f6741fd2bacbd3658681a70f65e2e90a02887989018974ce83775a568"},
    {"sha256", "9f9f5111f7b27a781f1f1ddde5ebc2dd2b796bfc7365c9c28b548e564176929f"},
    {"sha384", "fc6304023487cb6f85ac80e47817760c6b153c02da46c6429649e963b031e525"},
    {"sha512", "1c043fbe4bca7c7920dae536c680fd44c15d71ec12cd82a2a9491b0043b57f4d"},
    {"ripemd160", "edf4e38018cd71dd489b9c1e54b32054eb42dfad9fdcc22d629d756391a24982"},
    {"whirlpool", "b21fc274d47d79ba45f94d67077f0846f75a7acc1a4dc560eacca300179cc142"},
    {"sha3-224", "bbb7d56cc80a8c80e907f7d9240edc0be264aa173266b30918bc1065d59a9388"},
    {"sha3-256", "a5df4caae9fdb5dbacf667075b709a2f30a115c43168af332062b42d4b0da01f"},
    {"sha3-384", "56f351f754c418892eab4009e5f85c8d5436a591014503563e9395b895526413"},
    {"sha3-512", "59d06155d25dffdb982729de8dce9d7855ca094d8bab8124b347c40668477056"},
    {"sm3", "a34fdd8e843802b31a262dce5b1f501bed68ef81520de14b39657aecffaf8a86"},
  }

  it("derives cryptsetup's test vectors for every hash it lists, through OpenSSL's providers", function()
    for _, v in ipairs(cryptsetup_vectors) do
      assert.equal(v[2], hex(dm.key.plain("0123456789abcdef", {hash = v[1], size = 32})), v[1])
    end
    assert.equal("cd2eb0837c9b4c962c22d2ff8b5441b7b4580588000000000000000000000000",
                 hex(dm.key.plain("xxx", {hash = "sha256:20", size = 32})))
    assert.equal("cd2eb0837c9b4c962c22d2ff8b5441b7b45805887f051d39bf133b583baf6860",
                 hex(dm.key.plain("xxx", {hash = "sha256:32", size = 32})))
    assert.equal("7878787878787878000000000000000000000000000000000000000000000000",
                 hex(dm.key.plain("xxxxxxxx", {hash = "plain", size = 32})))
    assert.equal("7878000000000000000000000000000000000000000000000000000000000000",
                 hex(dm.key.plain("xxxxxxxx", {hash = "plain:2", size = 32})))
    refused(function() dm.key.plain("xxxxxxxx", {hash = "plain:9", size = 32}) end, "at least 9 bytes")
    refused(function() dm.key.plain("xxx", {hash = "sha256:", size = 32}) end, "field 'hash' must be")
    refused(function() dm.key.plain("xxx", {hash = "sha256:xx", size = 32}) end, "field 'hash' must be")
    refused(function() dm.key.plain("xxx", {hash = "stribog512", size = 32}) end, "unknown hash 'stribog512'")
    -- digests with no fixed size cannot fill a key (the NULL digest would never fill one)
    refused(function() dm.key.plain("xxx", {hash = "null", size = 32}) end, "hash 'null' has no fixed digest size")
    refused(function() dm.key.plain("xxx", {hash = "shake256", size = 32}) end, "hash 'shake256' has no fixed digest size")
    refused(function() dm.key.derive("xxx", {hash = "shake128", iterations = 1000}) end, "has no fixed digest size")
  end)

  it("derives PBKDF2 with any of those hashes, as OpenSSL's own kdf command does", function()
    local out = support.sh("openssl kdf -keylen 32 -kdfopt digest:whirlpool -kdfopt pass:pw -kdfopt salt:salt "
                           .. "-kdfopt iter:1000 -provider default -provider legacy PBKDF2")
    local want = out:gsub("[:%s]", ""):lower()
    assert.equal(64, #want, out)
    assert.equal(want, hex(dm.key.derive("pw", {hash = "whirlpool", iterations = 1000, salt = "salt", size = 32})))
    refused(function() dm.key.derive("pw", {hash = "nosuch", iterations = 1000}) end, "unknown hash 'nosuch'")
    refused(function() dm.key.derive("pw", {hash = "sha 1", iterations = 1000}) end, "field 'hash' must be a digest name")
  end)

  it("extends past one digest as cryptsetup does: round i hashes i 'A's, then the passphrase", function()
    local function sha256(s)
      local out = support.sh(("printf '%%s' '%s' | sha256sum"):format(s))
      return out:match("^(%x+)")
    end
    local pass = "correct horse battery staple"
    local want = sha256(pass) .. sha256("A" .. pass) .. sha256("AA" .. pass):sub(1, 16)
    assert.equal(want, hex(dm.key.plain(pass, {hash = "sha256", size = 72})))
  end)

  it("refuses what cryptsetup refuses, and missing fields", function()
    refused(function() dm.key.plain("short", {hash = "plain:8", size = 32}) end, "needs a passphrase of at least 8 bytes")
    refused(function() dm.key.plain("pw", {hash = "sha256:40", size = 32}) end, "the length after ':' must be 1 to the key size")
    refused(function() dm.key.plain("pw", {hash = "nosuchhash", size = 32}) end, "unknown hash 'nosuchhash'")
    refused(function() dm.key.plain("pw", {size = 32}) end, "field 'hash' must be \"plain\" or a digest name")
    refused(function() dm.key.plain("pw", {hash = "sha256"}) end, "field 'size' must be an integer from 1 to 4096")
  end)
end)

describe("dm.key.read", function()
  it("reads a key file whole, newlines and all", function()
    local dir = support.tmpdir()
    local k = dm.key.read(file(dir, "k", "line one\nline two\n"))
    assert.equal(hex(dm.key.from_hex("6c696e65206f6e650a6c696e652074776f0a")), hex(k))
    assert.matches("^devmapper.Key: 18 bytes, read$", tostring(k))
    local big = ("0123456789"):rep(1000)
    local b = dm.key.read(file(dir, "big", big))
    assert.equal(10000, #b)
    assert.equal(big, unhex(b:hex()))
  end)

  it("ends at a newline on stdin, not in a file given as '-' with newline = false", function()
    local code = [[local k = require("devmapper").key.read("-", %s) io.write(k:hex())]]
    local out = support.sh(("printf 'secret\\nmore' | %s -e '%s'"):format(lua_cmd(), code:format("nil")))
    assert.equal("736563726574", out)
    out = support.sh(("printf 'secret\\nmore' | %s -e '%s'"):format(lua_cmd(), code:format("{newline = false}")))
    assert.equal("7365637265740a6d6f7265", out)
    out = support.sh(("head -c 10000 /dev/zero | tr '\\0' x | %s -e '%s'")
                     :format(lua_cmd(), [[io.write(#require("devmapper").key.read("-", {newline = false}))]]))
    assert.equal("10000", out)
    -- an empty line is an empty passphrase: `printf '\n' | cryptsetup open --type plain --hash sha256
    -- --key-size 256` put this key (sha256 of nothing) in the table, in the sandbox; no input at all
    -- it refused ("Nothing to read on input"), as here
    local plain = [[local dm = require("devmapper") io.write(dm.key.plain(dm.key.read("-"), {hash = "sha256", size = 32}):hex())]]
    out = support.sh(("printf '\\n' | %s -e '%s'"):format(lua_cmd(), plain))
    assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", out)
    out = support.sh(("printf '' | %s -e '%s'"):format(lua_cmd(), plain))
    assert.matches("nothing to read (empty input refused)", out, 1, true)
  end)

  it("reads a key file whole even when stdin is closed and the file opens as fd 0", function()
    local path = file(support.tmpdir(), "k", "one\ntwo\n")
    local out = support.sh(("%s -e 'io.write(require(\"devmapper\").key.read(%q):hex())' <&-"):format(lua_cmd(), path))
    assert.equal("6f6e650a74776f0a", out)
  end)

  it("reads exactly size bytes from an offset, and refuses a short file", function()
    local dir = support.tmpdir()
    local path = file(dir, "k", "0123456789abcdef")
    assert.equal("34353637", hex(dm.key.read(path, {size = 4, offset = 4})))
    assert.equal(16, #dm.key.read(path, {size = 0}), "size 0 is no limit, as --keyfile-size 0")
    assert.equal(12, #dm.key.read(path, {size = 0, offset = 4}))
    refused(function() dm.key.read(path, {size = -1}) end, "field 'size' must be an integer >= 0")
    refused(function() dm.key.read(path, {size = 32}) end, "wanted 32 bytes, the input has 16")
  end)

  it("refuses empty and oversized input, and a missing file", function()
    local dir = support.tmpdir()
    refused(function() dm.key.read(file(dir, "empty", "")) end, "nothing to read (empty input refused)")
    refused(function() dm.key.read(file(dir, "big", ("x"):rep(9)), {max = 8}) end,
            "input longer than the maximum of 8 bytes")
    assert.equal(8, #dm.key.read(file(dir, "fits", ("x"):rep(8)), {max = 8}))
    local ok, err = pcall(dm.key.read, dir .. "/missing")
    assert.is_false(ok)
    assert.equal(2, err.errno)
    refused(function() dm.key.read(file(dir, "k", "x"), {newline = "yes"}) end, "field 'newline' must be a boolean")
  end)
end)

describe("dm.key.prompt", function()
  -- util-linux script(1) gives the child a terminal; each line of input
  -- comes a while after the last, once the child waits for it (turning echo
  -- off flushes what was typed ahead, as in cryptsetup).
  local function on_tty(code, lines)
    local dir = support.tmpdir()
    local f = file(dir, "child.lua", code)
    local typing = {}
    for i, l in ipairs(lines) do typing[i] = ("sleep %s; printf '%%s\\n' '%s'"):format(i == 1 and 1.5 or 1, l) end
    return support.sh(("(%s) | script -qec '%s %s' /dev/null"):format(table.concat(typing, "; "), lua_cmd(), f))
  end

  it("reads a line from the terminal without echo", function()
    local out = on_tty([[io.write("[", require("devmapper").key.prompt("Pass: "):hex(), "]")]], {"hunter2"})
    assert.matches("Pass:", out, 1, true)
    assert.matches("[68756e74657232]", out, 1, true)
    assert.is_nil(out:find("hunter2", 1, true), "the passphrase was echoed")
  end)

  it("reads a terminal given to key.read as one line, without echo", function()
    local out = on_tty([[io.write("[", require("devmapper").key.read("-"):hex(), "]")]], {"hunter2"})
    assert.matches("[68756e74657232]", out, 1, true)
    assert.is_nil(out:find("hunter2", 1, true), "the passphrase was echoed")
  end)

  it("asks twice with verify, and refuses a mismatch", function()
    local code = [[local ok, k = pcall(require("devmapper").key.prompt, "Pass: ", {verify = true})
                   io.write(ok and "[" .. k:hex() .. "]" or tostring(k))]]
    local out = on_tty(code, {"hunter2", "hunter2"})
    assert.matches("Verify passphrase:", out, 1, true)
    assert.matches("[68756e74657232]", out, 1, true)
    out = on_tty(code, {"hunter2", "hunter3"})
    assert.matches("passphrases do not match", out, 1, true)
  end)

  it("refuses an empty line", function()
    local out = on_tty([[print(pcall(require("devmapper").key.prompt))]], {""})
    assert.matches("empty passphrase refused", out, 1, true)
  end)
end)

describe("a Key", function()
  it("round-trips through hex, upper or lower case", function()
    local k = dm.key.random(64)
    assert.equal(128, #k:hex())
    assert.is_true(dm.key.from_hex(k:hex()) == k)
    assert.equal("00ff10ab", dm.key.from_hex("00FF10aB"):hex())
    assert.equal(unhex("00ff10ab"), unhex(dm.key.from_hex("00ff10ab"):hex()))
  end)

  it("refuses odd, empty and non-hex strings, without quoting them", function()
    refused(function() dm.key.from_hex("abc") end, "odd number of hex digits (3)")
    refused(function() dm.key.from_hex("") end, "empty")
    local err = refused(function() dm.key.from_hex("00112233445566zz") end, "character 15 is not a hex digit")
    assert.is_nil(tostring(err):find("0011223344", 1, true))
    refused(function() dm.key.from_hex(12) end, "expected a string of hex digits")
  end)

  it("shows its size and origin, never its bytes", function()
    local k = dm.key.from_hex(("ab"):rep(32))
    assert.equal("devmapper.Key: 32 bytes, hex", tostring(k))
    assert.equal("devmapper.Key: 64 bytes, random", tostring(dm.key.random(64)))
    assert.equal("devmapper.Key: 64 bytes, pbkdf2-sha512",
                 tostring(dm.key.derive("pw", {hash = "sha512", iterations = 1000})))
    assert.equal("devmapper.Key: 32 bytes, plain-sha256", tostring(dm.key.plain("pw", {hash = "sha256", size = 32})))
    assert.is_nil(tostring(k):find("abab", 1, true))
    assert.is_true(dm.key.is(k))
    assert.is_false(dm.key.is("abab"))
  end)

  it("gives its size with #", function()
    assert.equal(16, #dm.key.random(16))
    assert.equal(3, #dm.key.from_hex("010203"))
  end)

  it("compares by value with ==", function()
    local a, b = dm.key.from_hex("00112233"), dm.key.from_hex("00112233")
    assert.is_true(rawequal(a, a) and not rawequal(a, b))
    assert.is_true(a == b)
    assert.is_false(a == dm.key.from_hex("00112234"))
    assert.is_false(a == dm.key.from_hex("0011223300"))
    assert.is_false(dm.key.random(32) == dm.key.random(32))
    assert.is_false(a == "00112233")
  end)

  it("refuses out-of-range sizes for random keys", function()
    refused(function() dm.key.random(0) end, "nbytes must be an integer from 1 to 4096")
    refused(function() dm.key.random(4097) end, "nbytes must be an integer from 1 to 4096")
    refused(function() dm.key.random(1.5) end, "nbytes must be an integer")
  end)

  it("closes idempotently, and raises a clear error when used after", function()
    local k = dm.key.random(32)
    local other = dm.key.random(32)
    k:close()
    k:close()
    assert.equal("devmapper.Key: closed", tostring(k))
    for _, f in ipairs {
      function() return k:hex() end,
      function() return #k end,
      function() return k == other end,
      function() return dm.key.derive(k, {iterations = 1000}) end,
      function() return dm.key.plain(k, {hash = "sha256", size = 32}) end,
      function() return k:to_keyring("devmapper:spec-closed") end,
    } do
      local ok, err = pcall(f)
      assert.is_false(ok)
      assert.matches("the key is closed (its bytes were wiped)", tostring(err), 1, true)
    end
  end)

  it("is closed at the end of a <close> block", function()
    local outer
    do
      local k <close> = dm.key.random(32)
      outer = k
      assert.equal(32, #outer)
    end
    assert.equal("devmapper.Key: closed", tostring(outer))
  end)

  it("survives garbage collection, open or closed", function()
    for _ = 1, 200 do dm.key.random(64) end
    dm.key.random(8):close()
    collectgarbage()
    collectgarbage()
    assert.equal(64, #dm.key.random(64))
  end)
end)

describe("the kernel keyring #keyring", function()
  -- The live /proc/keys line of a logon key (an invalidated key, flag 'i',
  -- lingers there until the kernel's key collector runs).
  local function in_proc_keys(desc)
    local f = assert(io.open("/proc/keys"))
    local s = f:read("a")
    f:close()
    for line in s:gmatch("[^\n]+") do
      local flags = line:match("^%x+ (%S+)")
      if line:find(" logon ", 1, true) and line:find(" " .. desc .. ": ", 1, true)
         and not flags:find("[iRD]") then
        return line
      end
    end
    return nil
  end

  local function fresh(name) return ("devmapper:spec-%s-%d"):format(name, math.random(1e9)) end

  it("adds a logon key and returns the reference dm-crypt takes; unlink removes it", function()
    local k = dm.key.random(64)
    local desc = fresh("add")
    support.defer(function() pcall(dm.key.unlink, desc) end)
    assert.equal(":64:logon:" .. desc, k:to_keyring(desc))
    local line = in_proc_keys(desc)
    assert.truthy(line, "/proc/keys lists " .. desc)
    assert.matches(": 64$", line)
    assert.is_true(dm.key.unlink(desc))
    assert.is_nil(in_proc_keys(desc), "still in /proc/keys")
    local _, code = support.sh("keyctl search @u logon " .. desc)
    assert.are_not.equal(0, code, "keyctl still finds it")
    assert.is_false(dm.key.unlink(desc))
  end)

  it("keeps the payload from user space", function()
    local k = dm.key.random(32)
    local desc = fresh("payload")
    support.defer(function() pcall(dm.key.unlink, desc) end)
    k:to_keyring(desc)
    local id = support.sh(("keyctl search @u logon %s"):format(desc)):match("^(%d+)")
    assert.truthy(id, "keyctl finds the key")
    local out, code = support.sh("keyctl pipe " .. id)
    assert.are_not.equal(0, code)
    assert.matches("Operation not supported", out, 1, true)
    assert.is_nil(out:find(unhex(k:hex()), 1, true))
  end)

  it("picks a random description when given none", function()
    local ref = dm.key.random(32):to_keyring()
    local desc = ref:match("^:32:logon:(devmapper:%x+)$")
    assert.truthy(desc, ref)
    assert.is_true(dm.key.unlink(desc))
  end)

  it("is taken out again by the scope it was added in", function()
    local desc = fresh("scope")
    support.defer(function() pcall(dm.key.unlink, desc) end)
    do
      local s <close> = dm.scope()
      dm.key.random(32):to_keyring(desc)
      assert.truthy(in_proc_keys(desc))
    end
    assert.is_nil(in_proc_keys(desc))
  end)

  it("refuses bad descriptions before the kernel", function()
    local k = dm.key.random(32)
    local before = dm.kernel.total()
    for _, d in ipairs {"user:foo", "devmapper:", "devmapper:with space", "devmapper:x\n", "logon:devmapper:x",
                        "devmapper:" .. ("x"):rep(4090)} do
      refused(function() k:to_keyring(d) end, "keyring description must look like \"devmapper:NAME\"")
      refused(function() dm.key.unlink(d) end, "keyring description must look like \"devmapper:NAME\"")
    end
    refused(function() k:to_keyring(42) end, "keyring description must look like")
    assert.equal(before, dm.kernel.total())
  end)
end)
