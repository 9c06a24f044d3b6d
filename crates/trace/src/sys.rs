//! The few system calls `compromis record` needs that std does not offer: a Unix socket whose
//! reader learns, for every chunk it receives, the pid of the process that wrote it
//! (`SO_PASSCRED` / `SCM_CREDENTIALS`, unix(7)), and handing one descriptor to a child process.
//!
//! With `SO_PASSCRED` set on the receiving end, Linux never merges data written by two different
//! processes into one `recvmsg` result, and attaches the writer's credentials to each: valgrind's
//! log lines are attributed to the process that wrote them, however the processes interleave.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// A connected pair of Unix stream sockets (both close-on-exec): `(reader, writer)`. The reader
/// receives the writer's pid with every chunk ([`recv_with_pid`]).
pub(crate) fn cred_socketpair() -> io::Result<(UnixStream, UnixStream)> {
    let (reader, writer) = UnixStream::pair()?;
    let on: libc::c_int = 1;
    let len =
        libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).map_err(io::Error::other)?;
    // SAFETY: `reader` is an open socket for the duration of the call; `on` is a live c_int
    // and `len` is its size, as setsockopt(2) requires for SO_PASSCRED.
    let rc = unsafe {
        libc::setsockopt(
            reader.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&raw const on).cast(),
            len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((reader, writer))
}

/// Receives up to `buf.len()` bytes written by one process. Returns the byte count (0 at
/// end-of-file) and the writer's pid when the kernel attached it.
pub(crate) fn recv_with_pid(sock: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Option<u32>)> {
    // Room for one SCM_CREDENTIALS message; u64 elements keep it aligned for cmsghdr.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header that is filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: `msg` points at `iov` (which points at `buf`) and at `control`, all alive and
    // exclusively borrowed for the call; recvmsg(2) writes at most the lengths given.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    let mut pid = None;
    // SAFETY: the CMSG_* macros walk the control buffer recvmsg filled, bounded by
    // `msg.msg_controllen`; each header is checked for type and length before its data is read
    // (read_unaligned: the data need not be aligned for ucred).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            let want = libc::CMSG_LEN(
                u32::try_from(std::mem::size_of::<libc::ucred>()).unwrap_or(u32::MAX),
            );
            if (*cmsg).cmsg_level == libc::SOL_SOCKET
                && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS
                && (*cmsg).cmsg_len >= want as usize
            {
                let cred: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                pid = u32::try_from(cred.pid).ok();
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Ok((n, pid))
}

/// Makes `fd` (close-on-exec in this process) open in the child `cmd` starts, under the same
/// number, so `valgrind --log-fd=FD` can write to it.
pub(crate) fn inherit_fd(cmd: &mut Command, fd: RawFd) {
    // SAFETY: the closure runs in the child between fork and exec and only calls fcntl(2), which
    // is async-signal-safe; it allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Asks for a pipe buffer of `bytes` (`F_SETPIPE_SZ`), so that a fast writer runs ahead of
/// its reader instead of waking it for every 64 KiB; returns the size granted. Best effort:
/// the caller keeps the default size on an error (a size above `/proc/sys/fs/pipe-max-size`
/// for an unprivileged user, or an old kernel).
pub(crate) fn grow_pipe(fd: RawFd, bytes: i32) -> io::Result<i32> {
    // SAFETY: fcntl with F_SETPIPE_SZ takes an int and touches no memory of ours.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, bytes) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The executable of process `pid` (`/proc/PID/exe`), `None` once it has exited (or is a zombie).
pub(crate) fn process_exe(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// The parent of process `pid` (`PPid:` of `/proc/PID/status`), if it is still there.
pub(crate) fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Every descendant of process `root` (children, their children...), from `/proc/*/stat`.
pub(crate) fn descendants(root: u32) -> Vec<u32> {
    let mut children: std::collections::HashMap<u32, Vec<u32>> = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses; PPID follows the
        // last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            if c != root && !found.contains(&c) {
                found.push(c);
                todo.push(c);
            }
        }
    }
    found
}

/// Sends SIGKILL to every descendant of `root` (not to `root` itself), twice over so that a
/// process forked while the first pass ran is found by the second.
pub(crate) fn kill_descendants(root: u32) {
    for _ in 0..2 {
        for pid in descendants(root) {
            if let Ok(p) = libc::pid_t::try_from(pid) {
                // SAFETY: kill(2) with a positive pid and a valid signal number touches no memory.
                unsafe {
                    libc::kill(p, libc::SIGKILL);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn each_chunk_comes_with_its_writers_pid() {
        let (reader, mut writer) = cred_socketpair().unwrap();
        writer.write_all(b"I  10,1\n").unwrap();
        let mut buf = [0u8; 64];
        let (n, pid) = recv_with_pid(&reader, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"I  10,1\n");
        assert_eq!(pid, Some(std::process::id()));
        // Another process writing to an inherited descriptor is told apart.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("printf 'x\\n' >&{}", writer.as_raw_fd())]);
        inherit_fd(&mut cmd, writer.as_raw_fd());
        let child = cmd.spawn().unwrap();
        let child_pid = child.id();
        drop(writer);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let (n, pid) = recv_with_pid(&reader, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"x\n");
        assert_eq!(pid, Some(child_pid));
        assert_eq!(
            recv_with_pid(&reader, &mut buf).unwrap().0,
            0,
            "end-of-file"
        );
    }

    #[test]
    fn descendants_are_found_and_killed() {
        let mut child = Command::new("sh")
            .args(["-c", "sleep 37 & sleep 37 & wait"])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while descendants(child.id()).len() < 2 {
            assert!(std::time::Instant::now() < deadline, "sleeps did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let kids = descendants(std::process::id());
        assert!(kids.contains(&child.id()), "{kids:?}");
        let sleeps = descendants(child.id());
        kill_descendants(child.id());
        // The shell's wait returns once both sleeps are dead.
        let st = child.wait().unwrap();
        assert!(st.success() || st.code().is_some(), "{st}");
        for p in sleeps {
            assert!(
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .map_or(true, |s| !s.contains("(sleep)")),
                "sleep {p} still alive"
            );
        }
    }

    #[test]
    fn parent_and_exe_of_this_process() {
        let me = std::process::id();
        assert!(parent_of(me).is_some());
        assert!(process_exe(me).is_some());
        assert_eq!(parent_of(u32::MAX), None);
    }
}
