-- wrk script: POST an import of 10 bank transactions with a fresh
-- Idempotency-Key per request. Env: TOKEN, PROFILE (api or bench_api).
local token = os.getenv("TOKEN")
local profile = os.getenv("PROFILE") or "api"
math.randomseed(os.time())
local run = tostring(math.random(1, 1000000000))
local counter = 0
local rows = {}
for i = 1, 10 do
  rows[i] = string.format('{"amount": "%d.50", "currency": "EUR", "booked_on": "2026-11-%02d", "description": "bench import %d", "counterparty": "Initech"}', 100 + i, i, i)
end
local body = "[" .. table.concat(rows, ",") .. "]"

request = function()
  counter = counter + 1
  return wrk.format("POST", "/rpc/import_bank_transactions", {
    ["Content-Type"] = "application/json",
    ["Content-Profile"] = profile,
    ["Authorization"] = "Bearer " .. token,
    ["Idempotency-Key"] = "bench-" .. run .. "-" .. counter,
  }, body)
end
