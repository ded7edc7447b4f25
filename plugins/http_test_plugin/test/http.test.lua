-- modula plugin test plugins/http_test_plugin

function test_hello_default_name()
  local res = test.request("GET", "/hello")
  test.assert_eq(res.status, 200)
  test.assert_eq(res.json.message, "Hello, world!")
end

function test_hello_query()
  local res = test.request("GET", "/hello?name=Ada")
  test.assert_eq(res.json.message, "Hello, Ada!")
end

function test_middleware_runs_before_handler()
  local res = test.request("GET", "/hello")
  test.assert_eq(res.json.middleware, true, "the middleware marks the request")
end

function test_middleware_short_circuits()
  local res = test.request("GET", "/hello", {headers = {["X-Block-Me"] = "1"}})
  test.assert_eq(res.status, 403)
  test.assert_not_nil(res.json.error)
end

function test_echo_json()
  local res = test.request("POST", "/echo", {json = {a = 1, list = {"x", "y"}}})
  test.assert_eq(res.status, 200)
  test.assert_eq(res.json.received.a, 1)
  test.assert_eq(res.json.received.list[2], "y")
  test.assert_eq(res.json.method, "POST")
end

function test_echo_without_json_is_400()
  local res = test.request("POST", "/echo", {body = "plain text"})
  test.assert_eq(res.status, 400)
end

function test_path_parameter()
  local res = test.request("GET", "/items/42")
  test.assert_eq(res.status, 200)
  test.assert_eq(res.json.id, 42)
  test.assert_eq(res.json.name, "item 42")
end

function test_path_parameter_not_a_number()
  test.assert_eq(test.request("GET", "/items/abc").status, 404)
end

function test_public_webhook()
  local res = test.request("POST", "/webhook", {body = "{}"})
  test.assert_eq(res.status, 202)
  test.assert_eq(res.json.accepted, true)
end

function test_headers_route_answers()
  -- as the server answers it (names in lower case, as in ModulaCMS): only X-Plugin survives
  local res = test.request("GET", "/headers")
  test.assert_eq(res.status, 200)
  test.assert_eq(res.body, "headers test")
  test.assert_eq(res.headers["x-plugin"], "http_test_plugin")
  test.assert_nil(res.headers["set-cookie"])
  test.assert_eq(res.headers["cache-control"], "no-store")
end

function test_unknown_route_is_404()
  test.assert_eq(test.request("GET", "/nope").status, 404)
  test.assert_eq(test.request("DELETE", "/hello").status, 404)
end
