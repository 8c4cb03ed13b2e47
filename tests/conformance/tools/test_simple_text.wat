;; A fixture of the MCP conformance suite's tools-call-simple-text scenario:
;; a WASI command that writes a fixed text to stdout and exits 0.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "This is a simple text response for testing.")
  (func (export "_start")
    ;; one iovec at 0: the text at 64, 43 bytes; bytes written at 16
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 43))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))
