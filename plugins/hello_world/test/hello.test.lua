function test_default_greeting()
  local res = test.request("GET", "/hello")
  test.assert_eq(res.status, 200)
  test.assert_eq(res.json.message, "Hello, world!")
end

function test_query_name()
  local res = test.request("GET", "/hello?name=Ada")
  test.assert_eq(res.json.message, "Hello, Ada!")
end

function test_path_parameter()
  local res = test.request("GET", "/hello/bob")
  test.assert_eq(res.json.shout, "BOB!")
end

function test_unknown_route_is_404()
  test.assert_eq(test.request("GET", "/nope").status, 404)
end

function test_publish_hook_runs()
  local r = test.fire("after_publish", "content", {title = "Hi", slug = "hi"})
  test.assert(r.ok, r.error)
  test.assert_eq(r.ran, 1)
end

function test_lib_module()
  local text = require("text")
  test.assert_eq(text.shout("x"), "X!")
end
