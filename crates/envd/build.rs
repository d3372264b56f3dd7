//! Routes the binary's `epoll_ctl`/`epoll_wait` (mio's included) through envd's wrappers in
//! `main.rs`; see `envd::epoll_tokens` for why.
fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,--wrap=epoll_ctl,--wrap=epoll_wait");
}
