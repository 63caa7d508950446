#include "engine/storage.h"

namespace bet {

std::shared_ptr<Storage> Storage::allocate(size_t nbytes, Device device) {
  std::shared_ptr<Storage> s(new Storage());
  s->nbytes_ = nbytes;
  s->device_ = device;
  s->data_ = platform::allocate(nbytes, device, &s->capacity_);
  return s;
}

std::shared_ptr<Storage> Storage::wrap(void* data, size_t nbytes, Device device,
                                       std::function<void(void*)> release) {
  std::shared_ptr<Storage> s(new Storage());
  s->data_ = data;
  s->nbytes_ = nbytes;
  s->device_ = device;
  s->release_ = release ? std::move(release) : [](void*) {};
  return s;
}

Storage::~Storage() {
  if (release_) release_(data_);
  else platform::release(data_, capacity_, device_);
}

}  // namespace bet
