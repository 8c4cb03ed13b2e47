//! loadgen's tests, one binary (each test binary links wasmtime).

mod measurement;
mod profiles;
