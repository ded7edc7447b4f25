-- patterns.lua: pure-Lua 5.4 port of Lua 5.4's pattern matching (lstrlib.c).
--
-- Provides find/match/gmatch/gsub with the same semantics as the C versions,
-- but running as ordinary Lua code so that instruction-count hooks can stop a
-- pathological pattern.  Loaded with load(src, "=patterns", "t", env); only
-- the environment entries captured below are used.  string.find/match/gmatch/
-- gsub are never called.

local string, table, math = string, table, math
local type, tostring, tonumber, error, select = type, tostring, tonumber, error, select
local byte, sub, format = string.byte, string.sub, string.format
local concat, unpack = table.concat, table.unpack
local tointeger = math.tointeger

local MAXCCALLS = 200        -- max recursion depth of the matcher (lstrlib.c)
local MAXCAPTURES = 32       -- LUA_MAXCAPTURES
local CAP_UNFINISHED = -1
local CAP_POSITION = -2

-- byte codes
local B_PCT, B_LBRK, B_RBRK, B_CARET = 37, 91, 93, 94
local B_LPAR, B_RPAR, B_DOLLAR, B_DOT = 40, 41, 36, 46
local B_STAR, B_PLUS, B_MINUS, B_QUEST = 42, 43, 45, 63
local B_b, B_f, B_0, B_9 = 98, 102, 48, 57

---------------------------------------------------------------------------
-- Character classes (C locale).  CLASS[cl] is a 0..255 -> boolean table for
-- class letter byte cl (lower case = class, upper case = complement).
---------------------------------------------------------------------------
local CLASS = {}
do
  local function isupper(c) return c >= 65 and c <= 90 end
  local function islower(c) return c >= 97 and c <= 122 end
  local function isdigit(c) return c >= 48 and c <= 57 end
  local function isalpha(c) return isupper(c) or islower(c) end
  local function isalnum(c) return isalpha(c) or isdigit(c) end
  local function iscntrl(c) return c < 32 or c == 127 end
  local function isgraph(c) return c >= 33 and c <= 126 end
  local preds = {
    a = isalpha,
    c = iscntrl,
    d = isdigit,
    g = isgraph,
    l = islower,
    p = function(c) return isgraph(c) and not isalnum(c) end,
    s = function(c) return c == 32 or (c >= 9 and c <= 13) end,
    u = isupper,
    w = isalnum,
    x = function(c) return isdigit(c) or (c >= 65 and c <= 70) or (c >= 97 and c <= 102) end,
    z = function(c) return c == 0 end,  -- deprecated, but still in 5.4's lstrlib.c
  }
  local letters = "acdglpsuwxz"
  for k = 1, #letters do
    local lc = byte(letters, k)
    local pred = preds[sub(letters, k, k)]
    local yes, no = {}, {}
    for c = 0, 255 do
      local r = pred(c) and true or false
      yes[c] = r
      no[c] = not r
    end
    CLASS[lc] = yes
    CLASS[lc - 32] = no  -- upper-case letter: complement
  end
end

local function match_class(c, cl)
  local t = CLASS[cl]
  if t then return t[c] end
  return cl == c
end

---------------------------------------------------------------------------
-- Argument helpers (mimic luaL_check*/luaL_opt* messages).
---------------------------------------------------------------------------
local function argerror(argn, fname, msg)
  -- level 4: argerror -> check helper -> public function -> caller
  -- (find/match reach str_find_aux through a tail call, so the depth is the
  -- same for all entry points); mirrors luaL_error's luaL_where(L, 1).
  error(format("bad argument #%d to '%s' (%s)", argn, fname, msg), 4)
end

local function checkstring(v, argn, fname, nargs)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return tostring(v) end
  argerror(argn, fname, "string expected, got " .. (argn > nargs and "no value" or t))
end

local function optinteger(v, argn, fname, def)
  if v == nil then return def end
  local num = v
  if type(v) == "string" then num = tonumber(v) end
  if type(num) == "number" then
    local i = tointeger(num)
    if i then return i end
    argerror(argn, fname, "number has no integer representation")
  end
  argerror(argn, fname, "number expected, got " .. type(v))
end

-- translate a relative initial position (negative = from end); result in [1, inf)
local function posrelatI(pos, len)
  if pos > 0 then return pos
  elseif pos == 0 then return 1
  elseif pos < -len then return 1
  else return len + pos + 1 end
end

local function tobytes(p, lp)
  if lp <= 4000 then return { byte(p, 1, lp) } end
  local t = {}
  for i = 1, lp do t[i] = byte(p, i) end
  return t
end

---------------------------------------------------------------------------
-- Match state.  Creates the matcher closures for one (subject, pattern) pair.
-- Positions are 1-based; the subject "end" is slen + 1 and the pattern end
-- is plen + 1.  match() returns the position just after the match, or nil.
---------------------------------------------------------------------------
local function newstate(src, slen, P, plen)
  local level = 0
  local matchdepth = MAXCCALLS
  local cap_init, cap_len = {}, {}
  local match

  local function classEnd(p)
    local c = P[p]
    p = p + 1
    if c == B_PCT then
      if p > plen then error("malformed pattern (ends with '%')", 0) end
      return p + 1
    elseif c == B_LBRK then
      if P[p] == B_CARET then p = p + 1 end
      repeat  -- look for a ']'
        if p > plen then error("malformed pattern (missing ']')", 0) end
        local cc = P[p]
        p = p + 1
        if cc == B_PCT and p <= plen then p = p + 1 end  -- skip escapes
      until P[p] == B_RBRK
      return p + 1
    else
      return p
    end
  end

  -- p points to '[', ec to the closing ']'
  local function matchbracketclass(c, p, ec)
    local sig = true
    if P[p + 1] == B_CARET then
      sig = false
      p = p + 1
    end
    p = p + 1
    while p < ec do
      local pc = P[p]
      if pc == B_PCT then
        p = p + 1
        if match_class(c, P[p]) then return sig end
      elseif P[p + 1] == B_MINUS and p + 2 < ec then
        if pc <= c and c <= P[p + 2] then return sig end
        p = p + 2
      elseif pc == c then
        return sig
      end
      p = p + 1
    end
    return not sig
  end

  local function singlematch(s, p, ep)
    if s > slen then return false end
    local c = byte(src, s)
    local pc = P[p]
    if pc == B_DOT then return true
    elseif pc == B_PCT then return match_class(c, P[p + 1])
    elseif pc == B_LBRK then return matchbracketclass(c, p, ep - 1)
    else return pc == c end
  end

  local function matchbalance(s, p)
    if p >= plen then
      error("malformed pattern (missing arguments to '%b')", 0)
    end
    if s > slen or byte(src, s) ~= P[p] then return nil end
    local b, e = P[p], P[p + 1]
    local cont = 1
    s = s + 1
    while s <= slen do
      local c = byte(src, s)
      if c == e then
        cont = cont - 1
        if cont == 0 then return s + 1 end
      elseif c == b then
        cont = cont + 1
      end
      s = s + 1
    end
    return nil  -- string ends out of balance
  end

  local function max_expand(s, p, ep)
    local i = 0  -- counts maximum expand for item
    local pc = P[p]
    if pc == B_DOT then
      i = slen - s + 1
      if i < 0 then i = 0 end
    elseif pc == B_PCT then
      local t = CLASS[P[p + 1]]
      if t then
        while s + i <= slen and t[byte(src, s + i)] do i = i + 1 end
      else
        local cl = P[p + 1]
        while s + i <= slen and byte(src, s + i) == cl do i = i + 1 end
      end
    elseif pc == B_LBRK then
      local ec = ep - 1
      while s + i <= slen and matchbracketclass(byte(src, s + i), p, ec) do i = i + 1 end
    else
      while s + i <= slen and byte(src, s + i) == pc do i = i + 1 end
    end
    -- keeps trying to match with the maximum repetitions
    while i >= 0 do
      local res = match(s + i, ep + 1)
      if res then return res end
      i = i - 1  -- else didn't match; reduce 1 repetition to try again
    end
    return nil
  end

  local function min_expand(s, p, ep)
    while true do
      local res = match(s, ep + 1)
      if res then
        return res
      elseif singlematch(s, p, ep) then
        s = s + 1  -- try with one more repetition
      else
        return nil
      end
    end
  end

  local function start_capture(s, p, what)
    if level >= MAXCAPTURES then error("too many captures", 0) end
    level = level + 1
    cap_init[level] = s
    cap_len[level] = what
    local res = match(s, p)
    if not res then level = level - 1 end  -- undo capture
    return res
  end

  local function end_capture(s, p)
    local l = level
    while l >= 1 and cap_len[l] ~= CAP_UNFINISHED do l = l - 1 end
    if l < 1 then error("invalid pattern capture", 0) end
    cap_len[l] = s - cap_init[l]  -- close capture
    local res = match(s, p)
    if not res then cap_len[l] = CAP_UNFINISHED end  -- undo capture
    return res
  end

  local function match_capture(s, lc)
    local l = lc - B_0
    if l < 1 or l > level or cap_len[l] == CAP_UNFINISHED then
      error(format("invalid capture index %%%d", l), 0)
    end
    local len = cap_len[l]
    if len < 0 then return nil end  -- position capture: (size_t)-2 never fits
    if slen - s + 1 < len then return nil end
    local init = cap_init[l]
    for k = 0, len - 1 do
      if byte(src, init + k) ~= byte(src, s + k) then return nil end
    end
    return s + len
  end

  match = function(s, p)
    if matchdepth == 0 then error("pattern too complex", 0) end
    matchdepth = matchdepth - 1
    while p <= plen do  -- 'goto init' of the C code is this loop
      local pc = P[p]
      local dflt = false
      if pc == B_LPAR then  -- start capture
        if P[p + 1] == B_RPAR then  -- position capture?
          s = start_capture(s, p + 2, CAP_POSITION)
        else
          s = start_capture(s, p + 1, CAP_UNFINISHED)
        end
        break
      elseif pc == B_RPAR then  -- end capture
        s = end_capture(s, p + 1)
        break
      elseif pc == B_DOLLAR and p == plen then  -- '$' as last char
        if s ~= slen + 1 then s = nil end
        break
      elseif pc == B_PCT then
        local nc = P[p + 1]
        if nc == B_b then  -- balanced string?
          s = matchbalance(s, p + 2)
          if not s then break end
          p = p + 4
        elseif nc == B_f then  -- frontier?
          p = p + 2
          if P[p] ~= B_LBRK then
            error("missing '[' after '%f' in pattern", 0)
          end
          local ep = classEnd(p)
          local prev = (s == 1) and 0 or byte(src, s - 1)
          local cur = (s <= slen) and byte(src, s) or 0
          if not matchbracketclass(prev, p, ep - 1)
             and matchbracketclass(cur, p, ep - 1) then
            p = ep
          else
            s = nil
            break
          end
        elseif nc and nc >= B_0 and nc <= B_9 then  -- back reference
          s = match_capture(s, nc)
          if not s then break end
          p = p + 2
        else
          dflt = true
        end
      else
        dflt = true
      end
      if dflt then  -- pattern class plus optional suffix
        local ep = classEnd(p)
        local epc = P[ep]
        if not singlematch(s, p, ep) then
          if epc == B_STAR or epc == B_QUEST or epc == B_MINUS then
            p = ep + 1  -- accept empty
          else  -- '+' or no suffix
            s = nil
            break
          end
        elseif epc == B_QUEST then
          local res = match(s + 1, ep + 1)
          if res then
            s = res
            break
          end
          p = ep + 1
        elseif epc == B_PLUS then
          s = max_expand(s + 1, p, ep)
          break
        elseif epc == B_STAR then
          s = max_expand(s, p, ep)
          break
        elseif epc == B_MINUS then
          s = min_expand(s, p, ep)
          break
        else  -- no suffix
          s = s + 1
          p = ep
        end
      end
    end
    matchdepth = matchdepth + 1
    return s
  end

  local function domatch(s, p)
    level = 0
    matchdepth = MAXCCALLS
    return match(s, p)
  end

  -- i is the 1-based capture number
  local function get_onecapture(i, s, e)
    if i > level then
      if i ~= 1 then error(format("invalid capture index %%%d", i), 0) end
      return sub(src, s, e - 1)
    end
    local l = cap_len[i]
    if l == CAP_UNFINISHED then error("unfinished capture", 0) end
    if l == CAP_POSITION then return cap_init[i] end
    local init = cap_init[i]
    return sub(src, init, init + l - 1)
  end

  local function push_captures(s, e)
    local n = level
    if n == 0 then
      if s then return sub(src, s, e - 1) end
      return
    elseif n == 1 then
      return get_onecapture(1, s, e)
    end
    local t = {}
    for i = 1, n do t[i] = get_onecapture(i, s, e) end
    return unpack(t, 1, n)
  end

  return domatch, push_captures, get_onecapture
end

---------------------------------------------------------------------------
-- Plain search helpers
---------------------------------------------------------------------------
local SPECIAL = {}
do
  local sp = "^$*+?.([%-"
  for k = 1, #sp do SPECIAL[byte(sp, k)] = true end
end

local function nospecials(p, lp)
  for k = 1, lp do
    if SPECIAL[byte(p, k)] then return false end
  end
  return true
end

local function lmemfind(s, ls, init, p, lp)
  if lp == 0 then return init end
  local last = ls - lp + 1
  if init > last then return nil end
  local p1 = byte(p, 1)
  for i = init, last do
    if byte(s, i) == p1 then
      local j = 1
      while j < lp and byte(s, i + j) == byte(p, j + 1) do j = j + 1 end
      if j >= lp then return i end
    end
  end
  return nil
end

---------------------------------------------------------------------------
-- Public functions
---------------------------------------------------------------------------
local function str_find_aux(find, fname, nargs, s, p, init, plain)
  s = checkstring(s, 1, fname, nargs)
  p = checkstring(p, 2, fname, nargs)
  local ls, lp = #s, #p
  init = posrelatI(optinteger(init, 3, fname, 1), ls)
  if init > ls + 1 then return nil end  -- start after string's end
  if find and (plain or nospecials(p, lp)) then
    local pos = lmemfind(s, ls, init, p, lp)
    if pos then return pos, pos + lp - 1 end
  else
    local P = tobytes(p, lp)
    local pstart = 1
    local anchor = (P[1] == B_CARET)
    if anchor then pstart = 2 end
    local domatch, push_captures = newstate(s, ls, P, lp)
    local s1 = init
    repeat
      local res = domatch(s1, pstart)
      if res then
        if find then
          return s1, res - 1, push_captures(nil, 0)
        else
          return push_captures(s1, res)
        end
      end
      s1 = s1 + 1
    until s1 > ls + 1 or anchor
  end
  return nil
end

local function find(...)
  return str_find_aux(true, "find", select("#", ...), ...)
end

local function match(...)
  return str_find_aux(false, "match", select("#", ...), ...)
end

local function gmatch(...)
  local nargs = select("#", ...)
  local s, p, init = ...
  s = checkstring(s, 1, "gmatch", nargs)
  p = checkstring(p, 2, "gmatch", nargs)
  local ls, lp = #s, #p
  init = posrelatI(optinteger(init, 3, "gmatch", 1), ls)
  if init > ls + 1 then init = ls + 2 end  -- start after string's end
  local domatch, push_captures = newstate(s, ls, tobytes(p, lp), lp)
  local srcpos, lastmatch = init, nil
  return function()
    for src = srcpos, ls + 1 do
      local e = domatch(src, 1)
      if e and e ~= lastmatch then
        srcpos, lastmatch = e, e
        return push_captures(src, e)
      end
    end
  end
end

-- Pre-parse a replacement string into parts: strings (literal text),
-- integers (capture index, 0 = whole match) and false (invalid '%').
local function parse_repl(r)
  local parts, n = {}, 0
  local lr = #r
  local start, i = 1, 1
  while i <= lr do
    if byte(r, i) == B_PCT then
      if i > start then n = n + 1; parts[n] = sub(r, start, i - 1) end
      local c = byte(r, i + 1)
      n = n + 1
      if c == B_PCT then
        parts[n] = "%"
      elseif c and c >= B_0 and c <= B_9 then
        parts[n] = c - B_0
      else
        parts[n] = false
        return parts, n
      end
      i = i + 2
      start = i
    else
      i = i + 1
    end
  end
  if lr >= start then n = n + 1; parts[n] = sub(r, start, lr) end
  return parts, n
end

local function gsub(...)
  local nargs = select("#", ...)
  local s, p, repl, max_s = ...
  s = checkstring(s, 1, "gsub", nargs)
  p = checkstring(p, 2, "gsub", nargs)
  local ls, lp = #s, #p
  local tr = type(repl)
  max_s = optinteger(max_s, 4, "gsub", ls + 1)
  if not (tr == "number" or tr == "string" or tr == "function" or tr == "table") then
    error(format("bad argument #3 to 'gsub' (string/function/table expected, got %s)",
                 nargs < 3 and "no value" or tr), 2)
  end
  local P = tobytes(p, lp)
  local pstart = 1
  local anchor = (P[1] == B_CARET)
  if anchor then pstart = 2 end
  local domatch, push_captures, get_onecapture = newstate(s, ls, P, lp)

  local parts, nparts, literal
  if tr == "number" then repl = tostring(repl); tr = "string" end
  if tr == "string" then
    parts, nparts = parse_repl(repl)
    if nparts == 1 and type(parts[1]) == "string" then literal = parts[1]
    elseif nparts == 0 then literal = "" end
  end

  local buf, nb = {}, 0
  local copyfrom = 1   -- start of text not yet copied to buf
  local src, lastmatch = 1, nil
  local n, changed = 0, false
  while n < max_s do
    local e = domatch(src, pstart)
    if e and e ~= lastmatch then  -- match?
      n = n + 1
      -- add_value
      local value
      if tr == "string" then
        changed = true
        if copyfrom < src then nb = nb + 1; buf[nb] = sub(s, copyfrom, src - 1) end
        if literal then
          nb = nb + 1; buf[nb] = literal
        else
          for k = 1, nparts do
            local part = parts[k]
            local tp = type(part)
            if tp == "string" then
              nb = nb + 1; buf[nb] = part
            elseif part == 0 then
              nb = nb + 1; buf[nb] = sub(s, src, e - 1)
            elseif part then
              local v = get_onecapture(part, src, e)
              nb = nb + 1; buf[nb] = (type(v) == "number") and tostring(v) or v
            else
              error("invalid use of '%' in replacement string", 0)
            end
          end
        end
        copyfrom = e
      else
        if tr == "function" then
          value = repl(push_captures(src, e))
        else
          value = repl[get_onecapture(1, src, e)]
        end
        if value then
          local tv = type(value)
          if tv == "string" or tv == "number" then
            if copyfrom < src then nb = nb + 1; buf[nb] = sub(s, copyfrom, src - 1) end
            nb = nb + 1; buf[nb] = (tv == "number") and tostring(value) or value
            copyfrom = e
            changed = true
          else
            error(format("invalid replacement value (a %s)", tv), 0)
          end
        end
        -- nil or false: keep original text (it stays in the pending range)
      end
      src, lastmatch = e, e
    elseif src <= ls then  -- otherwise, skip one character
      src = src + 1
    else
      break  -- end of subject
    end
    if anchor then break end
  end
  if not changed then return s, n end
  if copyfrom <= ls then nb = nb + 1; buf[nb] = sub(s, copyfrom, ls) end
  return concat(buf, "", 1, nb), n
end

return { find = find, match = match, gmatch = gmatch, gsub = gsub }
