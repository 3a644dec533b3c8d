// CURVE keys (bridge/endpoints/curve_keys.h) and `wsbridge keygen` (keygen.h), on real files:
//   Z85          round trip; wrong length, foreign characters and non-canonical spellings refused
//   secret keys  the three file formats; group/other-readable, missing and malformed files
//                refused with one line that names the key and never shows the file's content
//   authorized   roles, comments, a '#' inside a key, errors naming the line, Allows() per domain
//   keygen       printed pair, --out files and their modes, no overwrite, no symlink following
#include "bridge/endpoints/curve_keys.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <string>
#include <vector>

#include "bridge/endpoints/keygen.h"
#include "testutil.h"

namespace wsbridge {
namespace {

using testing::ReadFileBytes;
using testing::TempDir;
using testing::WriteFileBytes;

constexpr const char* kSecretKey = "zmq.curve.secret_key_file";

struct Z85Pair {
  std::string public_z85;
  std::string secret_z85;
};

Z85Pair NewPair() {
  char pub[41], sec[41];
  EXPECT_EQ(zmq_curve_keypair(pub, sec), 0);
  return {pub, sec};
}

std::string Binary(const std::string& z85) { return Z85DecodeKey(z85).value_or(""); }

// Writes `text` to dir/name with `mode`; returns the path.
std::string KeyFile(const TempDir& dir, const std::string& name, const std::string& text,
                    mode_t mode = 0600) {
  std::string path = dir.File(name);
  EXPECT_TRUE(WriteFileBytes(path, text));
  EXPECT_EQ(::chmod(path.c_str(), mode), 0);
  return path;
}

// Runs KeygenMain with these arguments after "wsbridge keygen".
int Keygen(std::vector<std::string> args) {
  args.insert(args.begin(), {"wsbridge", "keygen"});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return KeygenMain(static_cast<int>(argv.size()), argv.data());
}

TEST(Z85, RoundTripAndRefusals) {
  Z85Pair p = NewPair();
  auto key = Z85DecodeKey(p.public_z85);
  ASSERT_TRUE(key);
  EXPECT_EQ(key->size(), kCurveKeyBytes);
  EXPECT_EQ(Z85EncodeKey(*key), p.public_z85);

  EXPECT_FALSE(Z85DecodeKey(p.public_z85.substr(1)));       // 39 characters
  EXPECT_FALSE(Z85DecodeKey(p.public_z85 + "0"));           // 41
  EXPECT_FALSE(Z85DecodeKey(std::string(39, '0') + "~"));   // not in the alphabet
  EXPECT_FALSE(Z85DecodeKey(std::string(39, '0') + '\0'));  // a NUL
  EXPECT_FALSE(Z85DecodeKey(std::string(39, '0') + ' '));   // a space
  EXPECT_FALSE(Z85DecodeKey(std::string(40, '%')));         // above 2^32 per group
  EXPECT_EQ(Z85EncodeKey("short"), "");
}

TEST(SecretKeyFile, ThreeFormats) {
  TempDir dir;
  Z85Pair p = NewPair();
  const std::string want = Binary(p.secret_z85);
  for (const std::string& text : {
           "  " + p.secret_z85 + "  \n\n",
           "public: " + p.public_z85 + "\nsecret: " + p.secret_z85 + "\n",
           "# comment\r\nsecret:" + p.secret_z85 + "\r\n",
           "#   ZeroMQ CURVE **Secret** Certificate\n\nmetadata\ncurve\n    public-key = \"" +
               p.public_z85 + "\"\n    secret-key = \"" + p.secret_z85 + "\"\n",
       }) {
    std::string path = KeyFile(dir, "k", text);
    auto key = ReadSecretKeyFile(path, kSecretKey);
    ASSERT_OK(key) << text;
    EXPECT_EQ(*key, want) << text;
    EXPECT_EQ(PublicKeyOf(*key), Binary(p.public_z85));
  }
  // Owner-only modes other than 0600 are fine.
  auto key = ReadSecretKeyFile(KeyFile(dir, "k400", p.secret_z85, 0400), kSecretKey);
  EXPECT_OK(key);
}

TEST(SecretKeyFile, RefusesAFileOthersCanRead) {
  TempDir dir;
  Z85Pair p = NewPair();
  std::string path = KeyFile(dir, "server.key", p.secret_z85, 0644);
  auto key = ReadSecretKeyFile(path, kSecretKey);
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.status().message(),
            "zmq.curve.secret_key_file: " + path +
                " is readable by group or others (mode 0644); chmod 600 it");
  EXPECT_FALSE(ReadSecretKeyFile(KeyFile(dir, "g", p.secret_z85, 0640), kSecretKey).ok());
  EXPECT_FALSE(ReadSecretKeyFile(KeyFile(dir, "o", p.secret_z85, 0604), kSecretKey).ok());
}

TEST(SecretKeyFile, RefusesMissingAndMalformedWithoutShowingThem) {
  TempDir dir;
  Z85Pair p = NewPair();
  auto missing = ReadSecretKeyFile(dir.File("nope"), "--client-key-file");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message(),
            "--client-key-file: cannot read " + dir.File("nope") + ": No such file or directory");

  auto is_dir = ReadSecretKeyFile(dir.path(), kSecretKey);
  EXPECT_FALSE(is_dir.ok());

  const std::string almost = p.secret_z85.substr(0, 39);
  for (const std::string& text : {
           std::string(""), almost + "\n",
           p.secret_z85 + "\n" + p.public_z85 + "\n",  // two keys: which one?
           "secret: " + p.secret_z85 + "\nsecret: " + p.secret_z85 + "\n",
           "secret-key " + p.secret_z85 + "\n",  // no '='
       }) {
    auto key = ReadSecretKeyFile(KeyFile(dir, "bad", text), kSecretKey);
    ASSERT_FALSE(key.ok()) << text;
    const std::string& m = key.status().message();
    EXPECT_EQ(m.rfind("zmq.curve.secret_key_file: ", 0), 0u) << m;
    EXPECT_NE(m.find("is not a CURVE secret key"), std::string::npos) << m;
    EXPECT_EQ(m.find(almost.substr(0, 10)), std::string::npos) << "shows the key: " << m;
    EXPECT_EQ(m.find('\n'), std::string::npos);
  }
}

TEST(AuthorizedKeys, ParsesRolesCommentsAndKeysContainingHash) {
  // A Z85 key may contain '#' (never as its first character): find one that does.
  Z85Pair hashed;
  for (int i = 0; i < 1000 && hashed.public_z85.find('#') == std::string::npos; ++i) {
    hashed = NewPair();
  }
  ASSERT_NE(hashed.public_z85.find('#'), std::string::npos);
  Z85Pair a = NewPair(), b = NewPair(), c = NewPair();
  std::string text =
      "# clients of the bridge\n"
      "\n"
      "subscribe " +
      a.public_z85 +
      " dashboard on host 1\n"
      "  send\t" +
      b.public_z85 +
      "   # order router\r\n"
      "all " +
      c.public_z85 +
      "\n"
      "subscribe " +
      hashed.public_z85 + "#not-a-comment-separator\n";
  // The last line's key is followed by text without a space: that is not a key of 40.
  auto bad = ParseAuthorizedKeys(text, "/etc/wsbridge/clients");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "zmq.curve.authorized_keys_file: /etc/wsbridge/clients: line 6: not a Z85 public key "
            "(40 characters)");

  text = text.substr(0, text.rfind("subscribe ")) + "subscribe " + hashed.public_z85 + "\n";
  auto keys = ParseAuthorizedKeys(text, "/etc/wsbridge/clients");
  ASSERT_OK(keys);
  ASSERT_EQ(keys->keys.size(), 4u);
  EXPECT_EQ(keys->keys[0].role, Role::kSubscribe);
  EXPECT_EQ(keys->keys[0].public_key, Binary(a.public_z85));
  EXPECT_EQ(keys->keys[0].comment, "dashboard on host 1");
  EXPECT_EQ(keys->keys[0].line, 3);
  EXPECT_EQ(keys->keys[1].role, Role::kSend);
  EXPECT_EQ(keys->keys[1].comment, "order router");
  EXPECT_EQ(keys->keys[2].role, Role::kAll);
  EXPECT_EQ(keys->keys[2].comment, "");
  EXPECT_EQ(keys->keys[3].public_key, Binary(hashed.public_z85));

  EXPECT_TRUE(ParseAuthorizedKeys("", "f")->keys.empty());
  EXPECT_TRUE(ParseAuthorizedKeys("# nobody yet\n\n", "f")->keys.empty());
}

TEST(AuthorizedKeys, ErrorsNameTheLine) {
  Z85Pair a = NewPair();
  auto role = ParseAuthorizedKeys("\n# x\nadmin " + a.public_z85 + "\n", "/k");
  ASSERT_FALSE(role.ok());
  EXPECT_EQ(role.status().message(),
            "zmq.curve.authorized_keys_file: /k: line 3: unknown role \"admin\" (subscribe, send "
            "or all)");

  auto key = ParseAuthorizedKeys(
      "send " + a.public_z85 + "\n\n\n\nsend " + a.public_z85.substr(0, 39) + "\n", "/k");
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.status().message(),
            "zmq.curve.authorized_keys_file: /k: line 5: not a Z85 public key (40 characters)");

  auto none = ParseAuthorizedKeys("send # forgot it\n", "/k");
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("line 1: no public key"), std::string::npos);

  auto upper = ParseAuthorizedKeys("SEND " + a.public_z85 + "\n", "/k");
  EXPECT_FALSE(upper.ok());

  TempDir dir;
  auto missing = ReadAuthorizedKeysFile(dir.File("clients"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().message().rfind("zmq.curve.authorized_keys_file: cannot read ", 0),
            0u);
}

TEST(AuthorizedKeys, AllowsByDomain) {
  Z85Pair sub = NewPair(), send = NewPair(), all = NewPair(), both = NewPair(), none = NewPair();
  auto keys = ParseAuthorizedKeys("subscribe " + sub.public_z85 + "\nsend " + send.public_z85 +
                                      "\nall " + all.public_z85 + "\nsubscribe " + both.public_z85 +
                                      "\nsend " + both.public_z85 + "\n",
                                  "f");
  ASSERT_OK(keys);
  struct Case {
    const Z85Pair& who;
    bool pub, replay, send;
  };
  for (const Case& c :
       {Case{sub, true, true, false}, Case{send, false, false, true}, Case{all, true, true, true},
        Case{both, true, true, true}, Case{none, false, false, false}}) {
    std::string k = Binary(c.who.public_z85);
    EXPECT_EQ(keys->Allows("pub", k), c.pub) << c.who.public_z85;
    EXPECT_EQ(keys->Allows("replay", k), c.replay) << c.who.public_z85;
    EXPECT_EQ(keys->Allows("send", k), c.send) << c.who.public_z85;
    // Role names are not domains; neither is anything else.
    EXPECT_FALSE(keys->Allows("subscribe", k));
    EXPECT_FALSE(keys->Allows("", k));
  }
  EXPECT_TRUE(keys->Lists(Binary(sub.public_z85)));
  EXPECT_FALSE(keys->Lists(Binary(none.public_z85)));
}

TEST(Keygen, PrintsAPair) {
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(Keygen({}), 0);
  std::string out = ::testing::internal::GetCapturedStdout();
  ASSERT_EQ(out.size(), 8 + 40 + 1 + 8 + 40 + 1) << out;
  ASSERT_EQ(out.substr(0, 8), "public: ");
  ASSERT_EQ(out.substr(49, 8), "secret: ");
  std::string pub = Binary(out.substr(8, 40));
  std::string sec = Binary(out.substr(57, 40));
  ASSERT_EQ(pub.size(), 32u);
  EXPECT_EQ(PublicKeyOf(sec), pub);
}

TEST(Keygen, WritesFilesOnceWithTheirModes) {
  TempDir dir;
  const std::string prefix = dir.File("server");
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(Keygen({"--out", prefix}), 0);
  std::string out = ::testing::internal::GetCapturedStdout();

  struct stat st {};
  ASSERT_EQ(::stat((prefix + ".key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  ASSERT_EQ(::stat((prefix + ".pub").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);

  auto secret = ReadSecretKeyFile(prefix + ".key", kSecretKey);
  ASSERT_OK(secret);
  std::string pub_text = ReadFileBytes(prefix + ".pub");
  ASSERT_EQ(pub_text.size(), 41u);
  EXPECT_EQ(Binary(pub_text.substr(0, 40)), PublicKeyOf(*secret));
  EXPECT_NE(out.find("public: " + pub_text.substr(0, 40)), std::string::npos) << out;
  EXPECT_EQ(out.find(Z85EncodeKey(*secret)), std::string::npos) << "prints the secret";

  // Again: refused, nothing overwritten.
  std::string before = ReadFileBytes(prefix + ".key");
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(Keygen({"--out=" + prefix}), 2);
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(err, "wsbridge keygen: " + prefix + ".key already exists; not overwriting it\n");
  EXPECT_EQ(ReadFileBytes(prefix + ".key"), before);

  // A .pub in the way: the .key just created is removed again (no half pair).
  const std::string other = dir.File("other");
  ASSERT_TRUE(WriteFileBytes(other + ".pub", "x\n"));
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(Keygen({"--out", other}), 2);
  ::testing::internal::GetCapturedStderr();
  EXPECT_NE(::access((other + ".key").c_str(), F_OK), 0);
  EXPECT_EQ(ReadFileBytes(other + ".pub"), "x\n");
}

TEST(Keygen, DoesNotFollowASymlink) {
  TempDir dir;
  const std::string target = dir.File("target");
  ASSERT_TRUE(WriteFileBytes(target, "precious\n"));
  ASSERT_EQ(::symlink(target.c_str(), dir.File("evil.key").c_str()), 0);
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(Keygen({"--out", dir.File("evil")}), 2);
  ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(ReadFileBytes(target), "precious\n");
}

TEST(Keygen, UsageAndBadArguments) {
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(Keygen({"--help"}), 0);
  EXPECT_NE(::testing::internal::GetCapturedStdout().find("Usage: wsbridge keygen"),
            std::string::npos);
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--out"}, {"--out="}, {"--bogus"}, {"extra"}}) {
    ::testing::internal::CaptureStderr();
    EXPECT_EQ(Keygen(args), 2);
    std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_EQ(err.rfind("wsbridge keygen: ", 0), 0u) << err;
    EXPECT_EQ(err.find('\n'), err.size() - 1) << err;
  }
}

}  // namespace
}  // namespace wsbridge
