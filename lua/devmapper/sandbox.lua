--- The sandbox: run a command in a throwaway QEMU guest whose kernel has
-- device-mapper, with the host's root filesystem mounted read-only.
-- This is the one module that runs programs (qemu, cpio); it never runs
-- dmsetup or losetup.
-- @module devmapper.sandbox
local core = require "devmapper.core"

local sandbox = {}

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
--- A word quoted for sh.
-- @function quote
-- @local
sandbox.quote = sh_quote

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function write(path, s, mode)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
  if mode then os.execute("chmod " .. mode .. " " .. sh_quote(path)) end
end

local function lines(cmd)
  local p = io.popen(cmd)
  local t = {}
  for l in p:lines() do t[#t + 1] = l end
  p:close()
  return t
end

--- The newest installed kernel that has dm-mod: version, vmlinuz path.
function sandbox.kernel()
  local best
  for _, v in ipairs(lines("ls /boot 2>/dev/null")) do
    local ver = v:match("^vmlinuz%-(.+)$")
    local dep = ver and read("/usr/lib/modules/" .. ver .. "/modules.dep")
    if dep and dep:find("/dm%-mod%.ko") and (not best or ver > best) then best = ver end
  end
  return best, best and "/boot/vmlinuz-" .. best
end

-- A program in PATH (no shell started to look).
local function in_path(name)
  for dir in (os.getenv("PATH") or "/usr/bin:/bin"):gmatch("[^:]+") do
    if exists(dir .. "/" .. name) then return true end
  end
end

--- true, or nil and what is missing.
function sandbox.available()
  if not sandbox.kernel() then return nil, "no kernel with device-mapper in /boot (apt-get install linux-image-amd64)" end
  if not in_path("qemu-system-x86_64") then return nil, "qemu-system-x86_64 missing (apt-get install qemu-system-x86)" end
  if not exists("/bin/busybox") then return nil, "/bin/busybox missing (apt-get install busybox-static)" end
  if not in_path("cpio") then return nil, "cpio missing (apt-get install cpio)" end
  return true
end

-- What the guest loads at boot: its devices (virtio-mmio, console, 9p),
-- overlay, device-mapper and loop. dm-crypt, dm-snapshot and the crypto
-- modules load on demand (through the host's modprobe).
local MODULES = {"virtio_mmio", "virtio_console", "9pnet_virtio", "9p", "overlay", "dm_mod", "loop"}

-- Those modules and their dependencies (from modules.dep), dependencies first.
local function module_order(ver)
  local base = "/usr/lib/modules/" .. ver .. "/"
  local deps, paths = {}, {}
  for l in (read(base .. "modules.dep") or ""):gmatch("[^\n]+") do
    local mod, rest = l:match("^(%S+):%s*(.*)$")
    local name = mod:match("([^/]+)%.ko"):gsub("-", "_")
    paths[name] = base .. mod
    deps[name] = {}
    for d in rest:gmatch("%S+") do deps[name][#deps[name] + 1] = d:match("([^/]+)%.ko"):gsub("-", "_") end
  end
  local order, seen = {}, {}
  local function visit(n)
    if seen[n] or not paths[n] then return end -- built in, or done
    seen[n] = true
    for _, d in ipairs(deps[n]) do visit(d) end
    order[#order + 1] = n
  end
  for _, m in ipairs(MODULES) do visit(m) end
  return order, paths, deps
end

-- Guest PID 1: mount the host's root read-only and the exchange directory
-- read-write, chroot, run the command script, write its status, power off.
local INIT = [[#!/bin/busybox sh
# (every $B call is a process: under emulation each costs a few hundredths of a second)
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
read -r mods < /modules
$B modprobe -a $mods 2>/dev/null || failed=" $mods"
o=trans=virtio,version=9p2000.L,msize=512000
$B mount -t 9p -o $o,ro,cache=loose hostroot /host && $B mount -t 9p -o $o io /io || $B poweroff -f
# from here on, what goes wrong is told to the host through /io/error
fail() { echo "$1${failed:+ (modules that did not load:$failed)}" > /io/error; $B poweroff -f; }
for d in proc sys dev; do $B mount --bind /$d /host/$d; done
# /tmp: the host's, read-only, under a writable tmpfs (a checkout may live there)
$B mount -t tmpfs tmpfs /upper && $B mkdir /upper/u /upper/w
$B mount -t overlay overlay -o lowerdir=/host/tmp,upperdir=/upper/u,workdir=/upper/w /host/tmp ||
  $B mount -t tmpfs tmpfs /host/tmp
for d in run mnt dev/shm; do $B mount -t tmpfs tmpfs /host/$d; done
$B mkdir /host/run/sandbox && $B mount --bind /io /host/run/sandbox
# crypto and target modules autoload through the host's modprobe (/modprobe)
echo /modprobe > /proc/sys/kernel/modprobe
# The command's output goes out through a virtio console, which appears
# asynchronously after its driver loads (sooner or later depending on the
# machine): wait for it. The console resets its modes at its last close, so
# hold it open on fd 3 while making it raw (no \n to \r\n) and running.
i=0
while [ ! -e /dev/hvc0 ] && [ $i -lt 500 ]; do $B sleep 0.02; i=$((i + 1)); done
[ -e /dev/hvc0 ] || fail "no virtio console for the output after 10 s"
exec 3>/dev/hvc0
$B stty raw -echo <&3
# A signal the host passes on comes as its number on the virtio port
# "dmlua.signal"; the command (cmd.sh writes its pid to /io/pid) gets it,
# so that it can undo what it made. The command runs in the foreground: a
# background one would start with SIGINT ignored, for good.
(
  i=0
  while [ -z "$port" ] && [ $i -lt 250 ]; do
    for p in /sys/class/virtio-ports/*; do
      read -r n < $p/name && [ "$n" = dmlua.signal ] && [ -e /dev/${p##*/} ] && port=/dev/${p##*/}
    done
    [ -n "$port" ] || $B sleep 0.02
    i=$((i + 1))
  done
  [ -n "$port" ] && read -r s < $port || exit
  i=0
  while [ ! -s /io/pid ] && [ $i -lt 250 ]; do $B sleep 0.02; i=$((i + 1)); done
  read -r pid < /io/pid && kill -$s $pid
) &
$B chroot /host /bin/sh /run/sandbox/cmd.sh </dev/null >&3 2>&3
echo $? > /io/status
$B poweroff -f
]]

-- FNV-1a, 32 bits: names the cached initramfs after the init it holds, so
-- a changed init never boots from a stale cache.
local function fnv1a(s)
  local h = 2166136261
  for i = 1, #s do h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff end
  return ("%08x"):format(h)
end

local function cache_dir()
  return (os.getenv("XDG_CACHE_HOME") or ((os.getenv("HOME") or "/tmp") .. "/.cache")) .. "/lua-devmapper"
end

-- Decompressors for a bzImage's payload, by the magic that starts it.
local PAYLOADS = {{"\xfd7zXZ\0", "xz -dc --single-stream"}, {"\x1f\x8b\x08", "gzip -dc"},
                  {"\x28\xb5\x2f\xfd", "zstd -dqc"}}

--- The kernel as an uncompressed ELF vmlinux, extracted once from the
-- bzImage and cached: QEMU boots it through its PVH entry, with no time
-- spent decompressing under emulation. Falls back to the bzImage.
-- @treturn string a path to boot
function sandbox.vmlinux(ver, vmlinuz)
  local f = io.open(vmlinuz, "rb")
  if not f then return vmlinuz end
  local size, head = f:seek("end"), f:seek("set") and f:read(65536) or ""
  f:close()
  local out = ("%s/vmlinux-%s-%s"):format(cache_dir(), ver, fnv1a(size .. head))
  if exists(out) then return out end
  local image = read(vmlinuz) or ""
  for _, p in ipairs(PAYLOADS) do
    local at = image:find(p[1], 1, true)
    local tmp = ("%s/.vmlinux-%s.%d"):format(cache_dir(), ver, math.random(1 << 30))  -- one per process
    if at and os.execute(("mkdir -p %s && tail -c +%d %s | %s > %s 2>/dev/null"):format(sh_quote(cache_dir()), at,
                         sh_quote(vmlinuz), p[2], sh_quote(tmp)))
       and (read(tmp) or ""):sub(1, 4) == "\x7fELF" then
      os.execute(("rm -f %s/vmlinux-%s-* && mv %s %s"):format(sh_quote(cache_dir()), sh_quote(ver), sh_quote(tmp), sh_quote(out)))
      return out
    end
    os.remove(tmp)
  end
  return vmlinuz
end

--- Path of the initramfs for a kernel version, built once and cached.
function sandbox.initramfs(ver)
  local dir = cache_dir()
  -- named after the init, the modules and the kernel's module list (an update in place changes it)
  local dep = io.open("/usr/lib/modules/" .. ver .. "/modules.dep", "rb")
  local depsize = dep and dep:seek("end")
  if dep then dep:close() end
  local out = ("%s/initramfs-%s-%s.cpio"):format(dir, ver, fnv1a(INIT .. table.concat(MODULES, " ") .. tostring(depsize)))
  if exists(out) then return out end
  local order, paths, deps = module_order(ver)
  local stage = lines("mktemp -d")[1]
  assert(stage and stage:match("^/"), "cannot make a staging directory")
  local q = sh_quote(stage)
  -- the modules, uncompressed, with their own modules.dep: one modprobe loads them all
  local mods = stage .. "/lib/modules/" .. ver
  assert(os.execute(("cd %s && mkdir -p %s bin proc sys dev host io upper %s && cp /bin/busybox bin/")
                    :format(q, sh_quote(dir), sh_quote(mods))), "cannot stage the initramfs")
  local dep = {}
  for i, m in ipairs(order) do
    local src = paths[m]
    local cmd = src:match("%.xz$") and "xz -dc " or src:match("%.zst$") and "zstd -dqc " or "cat "
    assert(os.execute(cmd .. sh_quote(src) .. " > " .. sh_quote(mods .. "/" .. m .. ".ko")), "cannot copy module " .. m)
    local d = {}
    for j, n in ipairs(deps[m]) do d[j] = n .. ".ko" end
    dep[i] = m .. ".ko:" .. (#d > 0 and " " .. table.concat(d, " ") or "")
  end
  write(mods .. "/modules.dep", table.concat(dep, "\n") .. "\n")
  write(stage .. "/modules", table.concat(order, " ") .. "\n")
  write(stage .. "/init", INIT, "755")
  write(stage .. "/modprobe", '#!/bin/busybox sh\nexec /bin/busybox chroot /host /sbin/modprobe "$@"\n', "755")
  -- built under a private name, then renamed over the older builds
  local tmp = dir .. "/.initramfs." .. stage:match("[^/]+$")
  -- not compressed: the kernel would spend longer unpacking it under emulation than reading it
  local ok = os.execute(("cd %s && find . | cpio -o -H newc --quiet > %s && rm -f %s/initramfs-%s-* && mv %s %s")
                        :format(q, sh_quote(tmp), sh_quote(dir), sh_quote(ver), sh_quote(tmp), sh_quote(out)))
  os.execute("rm -rf " .. q)
  assert(ok, "cannot build the sandbox initramfs")
  return out
end

local FORWARD = {"PATH", "HOME", "TERM", "LANG", "LC_ALL", "LUA_PATH", "LUA_CPATH", "LUA_PATH_5_4",
                 "LUA_CPATH_5_4", "LUA_INIT", "LUA_INIT_5_4", "TMPDIR", "CI"}

-- The script the guest runs: same environment and directory, then argv.
local function command_script(argv, udev)
  local s = {"set -e"}
  for _, k in ipairs(FORWARD) do
    local v = os.getenv(k)
    if v then s[#s + 1] = ("export %s=%s"):format(k, sh_quote(v)) end
  end
  for _, l in ipairs(lines("env")) do
    local k = l:match("^(DMLUA_[%w_]+)=")
    if k and not k:match("^DMLUA_SANDBOX_") then s[#s + 1] = ("export %s=%s"):format(k, sh_quote(os.getenv(k))) end
  end
  s[#s + 1] = "export DMLUA_IN_SANDBOX=1"
  if udev then
    -- as on a real machine: udev makes the nodes, and the module waits for it
    s[#s + 1] = "/lib/systemd/systemd-udevd --daemon 2>/dev/null"
    s[#s + 1] = "for i in $(seq 100); do [ -S /run/udev/control ] && break; sleep 0.1; done"
    s[#s + 1] = "[ -S /run/udev/control ] || { echo 'dmlua --sandbox: systemd-udevd did not start' >&2; exit 125; }"
  end
  s[#s + 1] = "cd " .. sh_quote(lines("pwd")[1])
  s[#s + 1] = "set +e"
  s[#s + 1] = "echo $$ > /run/sandbox/pid"   -- the pid the command keeps: signals go to it
  local q = {}
  for i, a in ipairs(argv) do q[i] = sh_quote(a) end
  s[#s + 1] = "exec " .. table.concat(q, " ")
  return table.concat(s, "\n") .. "\n"
end

--- Run argv in a fresh VM; its output comes to our stdout (stdout and
-- stderr merged), its exit status is returned. SIGINT, SIGTERM and SIGHUP
-- are passed on to the command in the guest (a second one ends the VM at
-- once); the VM never outlives the caller.
-- @tparam table argv {"/abs/program", "arg", ...}
-- @tparam[opt] table opts {timeout = seconds (DMLUA_SANDBOX_TIMEOUT or 3600),
--   memory = "1024M" (DMLUA_SANDBOX_MEMORY),
--   udev = true: run systemd-udevd in the guest, as on a real machine (DMLUA_SANDBOX_UDEV=1)}
-- @treturn integer exit status; 125 when the VM did not run the command
-- @usage os.exit(require("devmapper.sandbox").run({"/usr/sbin/dmsetup", "version"}))
function sandbox.run(argv, opts)
  opts = opts or {}
  local ok, why = sandbox.available()
  if not ok then
    io.stderr:write("dmlua --sandbox: ", why, "\n")
    return 125
  end
  local ver, vmlinuz = sandbox.kernel()
  local initrd = sandbox.initramfs(ver)
  local io_dir = lines("mktemp -d /tmp/dmlua-sandbox.XXXXXX")[1]
  local udev = opts.udev
  if udev == nil then udev = os.getenv("DMLUA_SANDBOX_UDEV") == "1" end
  write(io_dir .. "/cmd.sh", command_script(argv, udev))
  local cpu = read("/proc/cpuinfo") or ""
  local accel = (cpu:find("%f[%w]vmx%f[%W]") or cpu:find("%f[%w]svm%f[%W]")) and exists("/dev/kvm")
                and "kvm" or "tcg"
  local timeout = opts.timeout or tonumber(os.getenv("DMLUA_SANDBOX_TIMEOUT")) or 3600
  assert(os.execute("mkfifo " .. sh_quote(io_dir .. "/signal.in") .. " " .. sh_quote(io_dir .. "/signal.out")))
  -- The microvm machine (virtio-mmio devices found through ACPI, no PCI to
  -- probe) booting the uncompressed kernel through PVH. Under emulation the
  -- kernel's early TSC calibration against the PIT sometimes fails, and the
  -- boot then hangs: it gets the host's clock rate instead, and keeps the
  -- TSC (the host's, for every vCPU) as its clock, which is otherwise
  -- jiffies, 4 ms a tick. Crypto self-tests and the W+X scan are skipped in
  -- this throwaway VM.
  local args = "console=ttyS0 quiet loglevel=0 panic=-1 cryptomgr.notests rodata=off"
  local mhz = cpu:match("cpu MHz%s*:%s*(%d+)")
  if accel == "tcg" and mhz then args = args .. " tsc_early_khz=" .. mhz * 1000 .. " tsc=reliable" end
  local function share(id, path, tag, ro)
    return "-fsdev", ("local,id=%s,path=%s,security_model=none,multidevs=remap%s"):format(id, path, ro and ",readonly=on" or ""),
           "-device", ("virtio-9p-device,fsdev=%s,mount_tag=%s"):format(id, tag)
  end
  local qemu = {
    "qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
    "-M", "microvm", "-accel", accel, "-cpu", "max", "-smp", "2",
    "-m", opts.memory or os.getenv("DMLUA_SANDBOX_MEMORY") or "1024M",
    "-kernel", sandbox.vmlinux(ver, vmlinuz), "-initrd", initrd, "-append", args,
    "-device", "virtio-serial-device", "-chardev", "stdio,id=out,signal=off", "-device", "virtconsole,chardev=out",
    "-chardev", "pipe,id=sig,path=" .. io_dir .. "/signal", "-device", "virtserialport,chardev=sig,name=dmlua.signal",
    share("root", "/", "hostroot", true)}
  for _, a in ipairs {share("io", io_dir, "io", false)} do qemu[#qemu + 1] = a end
  local status, how = core.spawn(qemu, {notify = io_dir .. "/signal.in", timeout = timeout})
  io.stdout:flush()
  local code = tonumber(read(io_dir .. "/status") or "")
  local guest_error = read(io_dir .. "/error")
  -- the command started (its pid is there) and the guest went down under it
  local started = exists(io_dir .. "/pid")
  os.execute("rm -rf " .. sh_quote(io_dir))
  if not code then
    local why = guest_error and guest_error:gsub("\n$", "") or how == "timeout" and "the VM timed out after " .. timeout .. " s"
      or how == "signal" and "the VM was killed (" .. status - 128 .. ")"
      or started and "the guest went down under it: a kernel panic or reboot"
      or "the VM stopped early, status " .. status
    io.stderr:write(("dmlua --sandbox: the command did not %s (%s)\n"):format(started and "finish" or "run", why))
    return 125
  end
  return code
end

return sandbox
