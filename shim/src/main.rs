//! `jobq-job-shim`: the job shim and job init a worker starts for each job (see the library).

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    match jobq_job_shim::run(&args) {
        Some(code) => std::process::exit(code),
        None => {
            eprintln!(
                "jobq-job-shim: started by a jobq worker only ({} or {} first)",
                jobq_job_shim::SHIM_ARG,
                jobq_job_shim::INIT_ARG
            );
            std::process::exit(125);
        }
    }
}
