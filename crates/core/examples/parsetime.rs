use std::time::Instant;
fn main() {
    let bytes =
        std::fs::read(std::env::args().nth(1).unwrap_or("samples/ephyto/own/ephyto_CL-MX_851_issued.xml".into()))
            .unwrap();
    let n = 4000;
    for _ in 0..3 {
        for (label, opt) in
            [("default", 2048 | 4096), ("noblanks", 2048 | 4096 | 256), ("noblanks+compact", 2048 | 4096 | 256 | 65536)]
        {
            let t = Instant::now();
            for _ in 0..n {
                unsafe {
                    let d = libxml::bindings::xmlReadMemory(
                        bytes.as_ptr() as *const i8,
                        bytes.len() as i32,
                        std::ptr::null(),
                        std::ptr::null(),
                        opt,
                    );
                    libxml::bindings::xmlFreeDoc(d);
                }
            }
            println!("{label} {:?}/doc", t.elapsed() / n);
        }
    }
}
