import BatonCore
import ConsulAPI
import Testing

@Suite("what baton report leaves out")
struct RedactionTests {
    @Test("members named like secrets, at any depth; other members kept")
    func jsonMembers() throws {
        let value = try JSONValue.parse(Array(#"{"ttl":"10s","replication_password":"s3cret","nested":{"api_token":"t","list":[{"Secret":"x","keep":1}]}}"#.utf8))
        let redacted = Redaction.redact(value).serialized()
        #expect(!redacted.contains("s3cret") && !redacted.contains("\"t\"") && !redacted.contains("\"x\""))
        #expect(redacted.contains(#""ttl":"10s""#) && redacted.contains(#""keep":1"#) && redacted.contains(Redaction.marker))
    }

    @Test("passwords inside text: conninfo (quoted or not), SQL, URLs; the rest of the text kept")
    func text() {
        let cases: [(String, String)] = [
            ("host=db1 user=replicator password=s3cret application_name=x", "host=db1 user=replicator password=[redacted] application_name=x"),
            ("host=db1 password='a b c' port=5432", "host=db1 password='[redacted]' port=5432"),
            ("ALTER ROLE replicator PASSWORD 'hunter2';", "ALTER ROLE replicator PASSWORD '[redacted]';"),
            ("postgres://replicator:s3cret@db1:5432/postgres", "postgres://replicator:[redacted]@db1:5432/postgres"),
            ("password=one then password=two", "password=[redacted] then password=[redacted]"),
            ("nothing secret here: passwords are good", "nothing secret here: passwords are good"),
            ("password=", "password=[redacted]"),
        ]
        for (input, expected) in cases { #expect(Redaction.redact(text: input) == expected, "\(input)") }
    }
}
