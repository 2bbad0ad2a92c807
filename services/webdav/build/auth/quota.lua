-- The quota of a member's own folder (membres/<login>/), from the plan the directory
-- gives (employeeType) and the site's plans (WEBDAV_QUOTAS="plan=MiB,plan=MiB").
-- A PUT or COPY that would take the folder past its quota is refused with 507
-- (Insufficient Storage); a file replaced counts for its new size only. The member's
-- folder is made at their first request. A PUT sent in chunks states no Content-Length:
-- its announced size (X-Expected-Entity-Length, which macOS's Finder sends) counts
-- instead, and without one it is refused with 411 (Length Required), never let past.
require "apache2"

local ROOT = "/srv/files/membres/"
local MIB = 1024 * 1024

local function quotas()
  local found, smallest = {}, nil
  for plan, mib in string.gmatch(os.getenv("WEBDAV_QUOTAS") or "", "([%w-]+)=(%d+)") do
    found[plan] = tonumber(mib) * MIB
    if not smallest or found[plan] < smallest then smallest = found[plan] end
  end
  return found, smallest
end

local function usage(r, dir)
  local total = 0
  for _, name in ipairs(r:get_direntries(dir) or {}) do
    if name ~= "." and name ~= ".." then
      local path = dir .. "/" .. name
      local info = r:stat(path)
      if info and info.filetype == 2 then
        total = total + usage(r, path)
      elseif info then
        total = total + info.size
      end
    end
  end
  return total
end

function check_quota(r)
  local user = r.user
  if not user or not user:match("^[a-z][a-z0-9._-]*$") then
    return apache2.DECLINED
  end
  local home = ROOT .. user
  if not r:stat(home) then
    r:mkdir(home, 0x750)  -- APR's permission bits are 0xUGW: 0x750 is rwxr-x---
  end
  if r.method ~= "PUT" and r.method ~= "COPY" then
    return apache2.DECLINED
  end
  local target = r.filename or ""
  if r.method == "COPY" then
    local dest = r.headers_in["Destination"] or ""
    if not dest:find("/membres/" .. user .. "/", 1, true) then
      return apache2.DECLINED
    end
  elseif target:sub(1, #home + 1) ~= home .. "/" then
    return apache2.DECLINED
  end
  local by_plan, smallest = quotas()
  local quota = by_plan[r.subprocess_env["AUTHENTICATE_EMPLOYEETYPE"] or ""] or smallest
  if not quota then
    return apache2.DECLINED
  end
  local used = usage(r, home)
  local incoming
  if r.method == "COPY" then
    local source = r:stat(target)
    incoming = source and (source.filetype == 2 and usage(r, target) or source.size) or 0
  else
    local stated = r.headers_in["Content-Length"] or r.headers_in["X-Expected-Entity-Length"]
    incoming = tonumber(stated or "")
    if not incoming then
      return 411
    end
    local old = r:stat(target)
    if old and old.filetype == 1 then
      used = used - old.size
    end
  end
  if used + incoming > quota then
    r.err_headers_out["X-Quota-Used"] = tostring(used)
    r.err_headers_out["X-Quota-Bytes"] = tostring(quota)
    return 507
  end
  return apache2.DECLINED
end
