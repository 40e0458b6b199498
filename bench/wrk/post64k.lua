-- POST 64 KiB of "x" (wrk adds Content-Length); bench/compare appends result.lua.
wrk.method = "POST"
wrk.body = string.rep("x", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
