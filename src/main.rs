fn main() {
    print!("{}", antenna_operator::crd_yaml());
}
