// iostream / std::string / containers / exceptions.
// Modes: (none)      -> run all checks, exit 0
//        "uncaught"  -> throw an exception nobody catches: std::terminate prints
//                       "terminate called after throwing an instance of 'AppError'\n  what():  ..."
//                       to stderr and calls abort() -> killed by SIGABRT.
#include <algorithm>
#include <exception>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

struct AppError : std::runtime_error {
    int code;
    AppError(const std::string &msg, int c) : std::runtime_error(msg), code(c) {}
};
struct DerivedError : AppError {
    DerivedError(const std::string &msg) : AppError("derived: " + msg, 7) {}
};
struct NotAnException {
    int value;
};

static int live_guards = 0;
struct Guard {
    std::string name;
    explicit Guard(std::string n) : name(std::move(n)) { ++live_guards; }
    ~Guard() {
        --live_guards;
        std::cout << "  ~Guard(" << name << ")\n";
    }
};

static void level3(int what) {
    Guard g("level3");
    switch (what) {
    case 0: throw AppError("level3 failed", 42);
    case 1: throw DerivedError("deep");
    case 2: throw 17;
    case 3: throw std::string("a string");
    case 4: throw NotAnException{99};
    default: break;
    }
}
static void level2(int what) {
    Guard g("level2");
    level3(what);
}
static void rethrower(int what) {
    try {
        level2(what);
    } catch (const AppError &e) {
        std::cout << "  rethrower saw AppError code=" << e.code << ", rethrowing\n";
        throw;
    }
}

static int parse_checked(const std::string &s) {
    try {
        return std::stoi(s);
    } catch (const std::invalid_argument &) {
        std::throw_with_nested(std::runtime_error("cannot parse '" + s + "'"));
    }
}

static void run_all() {
    std::cout << "== strings ==\n";
    std::string s = "Hello";
    s += ", ";
    s.append("world");
    s.insert(0, ">> ");
    std::cout << s << " size=" << s.size() << " find(world)=" << s.find("world") << " substr=" << s.substr(3, 5)
              << "\n";
    std::string up = s;
    std::transform(up.begin(), up.end(), up.begin(), [](unsigned char c) { return (char)std::toupper(c); });
    std::cout << up << "\n";
    std::ostringstream os;
    os << std::setw(8) << std::setfill('.') << 42 << "|" << std::hex << 255 << std::dec << "|" << std::fixed
       << std::setprecision(3) << 3.14159 << "|" << std::scientific << 12345.678;
    std::cout << "ostringstream: " << os.str() << "\n";
    std::cout << std::boolalpha << "bool: " << true << " " << (s.empty()) << std::noboolalpha << "\n";

    std::cout << "== vector/sort ==\n";
    std::vector<int> v;
    unsigned x = 12345;
    for (int i = 0; i < 20; i++) {
        x = x * 1103515245u + 12345u;
        v.push_back((int)((x >> 16) % 1000));
    }
    std::sort(v.begin(), v.end());
    for (int n : v) std::cout << n << ' ';
    std::cout << "\nsum=" << std::accumulate(v.begin(), v.end(), 0) << " max=" << *std::max_element(v.begin(), v.end())
              << "\n";
    std::vector<std::string> words = {"delta", "alpha", "charlie", "bravo", "echo", "alpha"};
    std::sort(words.begin(), words.end(), [](const std::string &a, const std::string &b) {
        return a.size() != b.size() ? a.size() > b.size() : a < b;
    });
    for (auto &w : words) std::cout << w << ' ';
    std::cout << "\n";
    words.erase(std::unique(words.begin(), words.end()), words.end());
    std::cout << "unique count=" << words.size() << "\n";

    std::cout << "== map ==\n";
    std::map<std::string, int> counts;
    std::istringstream in("the cat and the dog and the bird");
    for (std::string w; in >> w;) counts[w]++;
    for (const auto &kv : counts) std::cout << kv.first << "=" << kv.second << "\n";
    auto up_ptr = std::make_unique<std::vector<double>>(3, 1.5);
    std::shared_ptr<int> sp = std::make_shared<int>(5);
    std::shared_ptr<int> sp2 = sp;
    std::cout << "unique_ptr size=" << up_ptr->size() << " shared use_count=" << sp.use_count() << "\n";

    std::cout << "== exceptions ==\n";
    for (int what = 0; what <= 4; what++) {
        try {
            level2(what);
        } catch (const DerivedError &e) {
            std::cout << "caught DerivedError: " << e.what() << " code=" << e.code << "\n";
        } catch (const AppError &e) {
            std::cout << "caught AppError: " << e.what() << " code=" << e.code << "\n";
        } catch (int i) {
            std::cout << "caught int " << i << "\n";
        } catch (const std::string &str) {
            std::cout << "caught std::string '" << str << "'\n";
        } catch (...) {
            std::cout << "caught (...) \n";
        }
        std::cout << "live guards after case " << what << ": " << live_guards << "\n";
    }
    try {
        rethrower(1);
    } catch (const std::exception &e) {
        std::cout << "caught rethrown as std::exception: " << e.what() << "\n";
    }
    std::exception_ptr ep;
    try {
        throw AppError("stored", 3);
    } catch (...) {
        ep = std::current_exception();
    }
    try {
        std::rethrow_exception(ep);
    } catch (const AppError &e) {
        std::cout << "rethrow_exception: " << e.what() << " code=" << e.code << "\n";
    }
    try {
        std::vector<int> small(3);
        (void)small.at(10);
    } catch (const std::out_of_range &) {
        std::cout << "vector::at threw out_of_range\n";
    }
    try {
        std::vector<int> big;
        big.reserve(big.max_size() + 1);
    } catch (const std::length_error &) {
        std::cout << "reserve threw length_error\n";
    }
    try {
        parse_checked("not-a-number");
    } catch (const std::runtime_error &e) {
        std::cout << "outer: " << e.what() << "\n";
        try {
            std::rethrow_if_nested(e);
        } catch (const std::invalid_argument &) {
            std::cout << "nested: invalid_argument\n";
        }
    }
    std::cout << "parse_checked(\"123\")=" << parse_checked("123") << "\n";
    try {
        try {
            throw std::logic_error("inner");
        } catch (std::logic_error &) {
            throw std::runtime_error("translated");
        }
    } catch (const std::exception &e) {
        std::cout << "translated: " << e.what() << "\n";
    }
    std::cerr << "cpp_exceptions: stderr works\n";
    std::cout << "all done\n";
}

int main(int argc, char **argv) {
    std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "uncaught") {
        std::cout << "about to throw uncaught" << std::endl;
        Guard g("never-destroyed");  // no unwinding happens when nothing catches
        throw AppError("nobody catches this", 1);
    }
    run_all();
    return 0;
}
