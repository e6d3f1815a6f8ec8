import BatonCore
import Testing

struct FileMappingTests {
    static let smaps = """
        55a29ce93000-55a29ef60000 r-xp 00000000 fe:00 5425522                    /usr/bin/baton
        Size:              34612 kB
        Rss:               21460 kB
        Anonymous:             0 kB
        Locked:                0 kB
        VmFlags: rd ex mr mw me
        55a29ef61000-55a29f043000 r--p 020cd000 fe:00 5425522                    /usr/bin/baton
        Rss:                 904 kB
        Anonymous:           904 kB
        Locked:                0 kB
        55a29f043000-55a2a150e000 rw-p 021af000 fe:00 5425522                    /usr/bin/baton
        Rss:                6232 kB
        Anonymous:           384 kB
        Locked:                0 kB
        7f00000000-7f00001000 r--p 00000000 fe:00 17                         /usr/lib/x86_64-linux-gnu/libc.so.6
        Rss:                   4 kB
        Anonymous:             0 kB
        Locked:                0 kB
        7f00010000-7f00020000 r-xp 00000000 fe:00 18                         /usr/lib/locked.so
        Rss:                  64 kB
        Anonymous:             0 kB
        Locked:               64 kB
        VmFlags: rd ex mr mw me lo
        7f00030000-7f00040000 r-xp 00000000 00:00 0                          [vdso]
        Rss:                   8 kB
        Anonymous:             0 kB
        7f00050000-7f00060000 r-xs 00000000 fe:00 19                         /dev/shm/shared map
        Rss:                   8 kB
        Anonymous:             0 kB
        7f00070000-7f00080000 r-xp 00000000 fe:00 20                         /usr/lib/cut-off.so
        Rss:                   8 kB
        """

    @Test("only private read-only file mappings holding no page of their own, not locked, may be dropped")
    func mayBeDropped() {
        let mappings = FileMapping.parse(smaps: Self.smaps)
        #expect(mappings.map(\.path) == ["/usr/bin/baton", "/usr/bin/baton", "/usr/bin/baton", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/locked.so", "[vdso]", "/dev/shm/shared map"])
        #expect(mappings.filter(\.mayBeDropped).map(\.start) == [0x55a2_9ce9_3000, 0x7f_0000_0000])
        #expect(mappings[0].end == 0x55a2_9ef6_0000 && mappings[0].residentKB == 21_460)
        #expect(mappings[4].locked)
    }
}
