//! Floor: N loopback TCP connections; one thread writes one 260-byte
//! message to each, one thread reads them with epoll. Prints time per round.
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(10_000);
    let rounds: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(50);
    let gap_ms: u64 = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(40);
    let quickack_off = std::env::var("NOQUICKACK").is_ok();
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..n {
        let c = TcpStream::connect(addr)?;
        let (s, _) = l.accept()?;
        s.set_nodelay(true)?;
        c.set_nonblocking(true)?;
        servers.push(s);
        clients.push(c);
    }
    let reader = std::thread::spawn(move || {
        use mio::{Events, Interest, Poll, Token, unix::SourceFd};
        use std::os::fd::AsRawFd;
        let mut poll = Poll::new().unwrap();
        for (i, c) in clients.iter().enumerate() {
            poll.registry().register(&mut SourceFd(&c.as_raw_fd()), Token(i), Interest::READABLE).unwrap();
        }
        let mut events = Events::with_capacity(1024);
        let mut buf = [0u8; 4096];
        let mut got = 0usize;
        let total = n * rounds;
        let mut acks = 0;
        while got < total {
            poll.poll(&mut events, Some(Duration::from_millis(100))).unwrap();
            for e in events.iter() {
                let mut c = &clients[e.token().0];
                loop {
                    match c.read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => {
                            got += k / 260;
                            if quickack_off {
                                let zero: libc::c_int = 0;
                                unsafe { libc::setsockopt(c.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_QUICKACK, &zero as *const _ as *const libc::c_void, 4); }
                                acks += 1;
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
        }
        acks
    });
    std::thread::sleep(Duration::from_millis(200));
    let msg = [b'x'; 260];
    let mut times = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        for s in servers.iter_mut() {
            s.write_all(&msg)?;
        }
        times.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(gap_ms));
    }
    let t = Instant::now();
    let _ = reader.join();
    times.sort();
    println!("{n} sockets: write round p50 {:?} max {:?}; reader finished {:?} after last round", times[times.len()/2], times[times.len()-1], t.elapsed());
    Ok(())
}
