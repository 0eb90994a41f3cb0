use super::*;

/// Given the head of a chain made available, writes its response bytes
/// and says which head to return with which used length (or none).
type Answer = dyn FnMut(u16, &mut Vec<u8>) -> Option<(u16, u32)>;

/// A device over plain memory that answers each command as `answer` says,
/// with the driver's pages at 0.
struct FakeDevice {
    mem: Vec<u8>,
    /// Per notify of queue 0: (head to return, used length, response bytes), or no answer.
    answer: Box<Answer>,
    used_idx: u16,
    last_avail: u16,
    polls: u32,
}

impl GuestMemory for FakeDevice {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) {
        let at = gpa as usize;
        buf.copy_from_slice(&self.mem[at..at + buf.len()]);
    }
    fn write(&mut self, gpa: u64, data: &[u8]) {
        let at = gpa as usize;
        self.mem[at..at + data.len()].copy_from_slice(data);
    }
}

impl Transport for FakeDevice {
    fn notify(&mut self, queue: u16) {
        if queue != 0 {
            return;
        }
        let q = SplitQueue::in_page(0, QUEUE_SIZE).addrs;
        let mut idx = [0u8; 2];
        self.read(q.avail + 2, &mut idx);
        while self.last_avail != u16::from_le_bytes(idx) {
            let mut h = [0u8; 2];
            self.read(q.avail + 4 + 2 * u64::from(self.last_avail % QUEUE_SIZE), &mut h);
            self.last_avail = self.last_avail.wrapping_add(1);
            let mut resp = Vec::new();
            if let Some((head, len)) = (self.answer)(u16::from_le_bytes(h), &mut resp) {
                self.give_back(head, len, &resp);
            }
        }
    }
    fn begin_wait(&mut self) {
        self.polls = 0;
    }
    fn idle(&mut self) -> bool {
        self.polls += 1;
        self.polls < 3
    }
}

impl FakeDevice {
    /// Writes `resp` into the response page and returns chain `head` with used length `len`.
    fn give_back(&mut self, head: u16, len: u32, resp: &[u8]) {
        let q = SplitQueue::in_page(0, QUEUE_SIZE).addrs;
        let n = resp.len().min(4096);
        self.mem[3 * 4096..3 * 4096 + n].copy_from_slice(&resp[..n]);
        let mut e = [0u8; 8];
        e[..2].copy_from_slice(&head.to_le_bytes());
        e[4..].copy_from_slice(&len.to_le_bytes());
        self.write(q.used + 4 + 8 * u64::from(self.used_idx % QUEUE_SIZE), &e);
        self.used_idx = self.used_idx.wrapping_add(1);
        let i = self.used_idx.to_le_bytes();
        self.write(q.used + 2, &i);
    }
}

fn device(answer: impl FnMut(u16, &mut Vec<u8>) -> Option<(u16, u32)> + 'static) -> (Driver, FakeDevice) {
    let pages: Vec<u64> = (0..DMA_PAGES as u64).map(|i| i * 4096).collect();
    let mut t =
        FakeDevice { mem: vec![0; DMA_PAGES * 4096], answer: Box::new(answer), used_idx: 0, last_avail: 0, polls: 0 };
    let mut d = Driver::new(&pages);
    d.prepare(&mut t);
    (d, t)
}

fn ok_open(resp: &mut Vec<u8>) {
    resp.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0]);
}

#[test]
fn a_response_shorter_than_its_header_is_malformed_not_a_panic() {
    for len in 0..8u32 {
        let (mut d, mut t) = device(move |head, resp| {
            ok_open(resp);
            Some((head, len))
        });
        assert!(
            matches!(d.open(&mut t), Err(MediaError::Malformed(m)) if m.contains("shorter than")),
            "used length {len}"
        );
    }
    let (mut d, mut t) = device(|head, resp| {
        ok_open(resp);
        Some((head, 5000))
    });
    assert!(matches!(d.open(&mut t), Err(MediaError::Malformed(m)) if m.contains("past the")));
}

#[test]
fn a_late_answer_is_never_taken_for_the_next_command() {
    // The first command goes unanswered; every later one is answered at once.
    let mut n = 0;
    let (mut d, mut t) = device(move |head, resp| {
        n += 1;
        ok_open(resp);
        (n > 1).then_some((head, 12))
    });
    assert!(matches!(d.open(&mut t), Err(MediaError::Timeout(_))));
    // The second OPEN is not sent while the first is outstanding.
    assert!(matches!(d.open(&mut t), Err(MediaError::Stale(w)) if w.contains("after OPEN")));
    // The first comes back late, saying session 9: dropped; the third is answered as itself.
    t.give_back(0, 12, &[0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0]);
    assert_eq!(d.open(&mut t), Ok(7));
}

#[test]
fn an_answer_on_another_chain_is_malformed() {
    let (mut d, mut t) = device(|head, resp| {
        ok_open(resp);
        Some((head + 1, 12))
    });
    assert!(matches!(d.open(&mut t), Err(MediaError::Malformed(m)) if m.contains("not this command's")));
    // This command's chain is still out: the next command is not sent over it.
    assert!(matches!(d.open(&mut t), Err(MediaError::Stale(w)) if w.contains("after OPEN")));
}

#[test]
fn a_device_that_grants_more_buffers_than_v4l2_holds_is_malformed() {
    // Every ioctl answered with errno 0 and 4e9 in the first payload word.
    let mut sent = 0;
    let (mut d, mut t) = device(move |head, resp| {
        sent += 1;
        assert!(sent < 10, "QUERYBUF after QUERYBUF: the grant was not checked");
        resp.extend_from_slice(&[0; 8]);
        resp.extend_from_slice(&4_000_000_000u32.to_le_bytes());
        resp.resize(4096, 0);
        Some((head, 4096))
    });
    let got = d.setup_capture(&mut t, 4, (640, 480, *b"YU12"));
    assert!(matches!(&got, Err(MediaError::Malformed(m)) if m.contains("granted 4000000000")), "{got:?}");
}

/// Random used heads, lengths and bytes: every driver call returns, none panics.
#[test]
fn random_answers_never_panic_the_driver() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..300 {
        let mut rnd = next();
        let (mut d, mut t) = device(move |head, resp| {
            let mut r = || {
                rnd ^= rnd << 13;
                rnd ^= rnd >> 7;
                rnd ^= rnd << 17;
                rnd
            };
            let n = (r() % 300) as usize;
            resp.extend((0..n).map(|_| if r() % 3 == 0 { 0 } else { r() as u8 }));
            match r() % 6 {
                0 => None,
                1 => Some(((r() % 20) as u16, (r() % 5000) as u32)),
                2 => Some((head, (r() % 12) as u32)),
                _ => Some((head, n as u32)),
            }
        });
        let _ = d.open(&mut t);
        let _ = d.setup_capture(&mut t, 4, (640, 480, *b"YU12"));
        let _ = d.mmap(&mut t, 0, true);
        let _ = d.munmap(&mut t, 0);
        let _ = d.qbuf(&mut t, 0);
        let _ = d.stream(&mut t, true);
        let _ = d.next_event(&mut t, "event");
        let _ = d.close(&mut t);
    }
}
