/// A name pattern: `*` matches any run of Unicode scalars, `?` one scalar, everything
/// else itself. In key patterns `{sub}` stands for the caller's subject, taken
/// literally (a `*` in a subject matches only a `*`).
struct Glob: Sendable, Hashable {
    enum Token: Sendable, Hashable {
        case literal(Unicode.Scalar)
        case any
        case one
        case subject
    }

    let tokens: [Token]

    init(_ pattern: String) {
        var tokens: [Token] = []
        // Unicode scalars, not Characters: names and subjects are compared exactly
        // (canonically equivalent spellings such as "K" and the Kelvin sign, or a
        // precomposed "é" and "e" + combining accent, are different principals and keys,
        // as they are different bytes in the store).
        var rest = Substring.UnicodeScalarView(pattern.unicodeScalars)
        let marker = Array("{sub}".unicodeScalars)
        while let c = rest.first {
            if rest.starts(with: marker) {
                tokens.append(.subject)
                rest = rest.dropFirst(marker.count)
                continue
            }
            tokens.append(c == "*" ? .any : c == "?" ? .one : .literal(c))
            rest = rest.dropFirst()
        }
        self.tokens = tokens
    }

    /// True when the pattern is `*` alone.
    var matchesEverything: Bool { tokens == [.any] }

    /// True when `name` matches, with `{sub}` replaced by `subject`.
    func matches(_ name: String, subject: String = "") -> Bool {
        var pattern = tokens
        if tokens.contains(.subject) {
            pattern = []
            for token in tokens {
                if token == .subject { pattern += subject.unicodeScalars.map(Token.literal) } else { pattern.append(token) }
            }
        }
        let text = Array(name.unicodeScalars)
        // Iterative matching with one backtrack point per `*`: O(n·m) at worst.
        var p = 0
        var t = 0
        var star: Int?
        var resume = 0
        while t < text.count {
            if p < pattern.count {
                switch pattern[p] {
                case .any:
                    star = p
                    resume = t
                    p += 1
                    continue
                case .one:
                    p += 1
                    t += 1
                    continue
                case .literal(let c) where c == text[t]:
                    p += 1
                    t += 1
                    continue
                case .literal, .subject:
                    break
                }
            }
            guard let s = star else { return false }
            p = s + 1
            resume += 1
            t = resume
        }
        while p < pattern.count, pattern[p] == .any { p += 1 }
        return p == pattern.count
    }
}
